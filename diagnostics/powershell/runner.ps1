# Kaiketsu on-host runner: Windows PowerShell 5.1 only (no ??, ?., ternary, && or ||).
# Runs a plan of typed steps and writes one JSON line per step the moment it ends.
# Contract: docs/protocol.md. Step kinds and fact keys: diagnostics/catalog.py.
# Every plan value is data: it is read from the parsed plan object and passed as a cmdlet
# parameter or an argument variable, never concatenated into code.
# A step that cannot find out says so ("cannot": reason, missing right) instead of reporting a
# false fact: Windows often answers a denial with emptiness. Each such place names its item of
# the review (D-1 ... D-10, ../shared/facts/windows-runner-review.md, summarised in
# docs/windows-setup.md).
param(
    [Parameter(Mandatory = $true)]
    [string]$PlanJson
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
# The console host writes warnings to stdout, where they would break the JSON lines.
$WarningPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
$VerbosePreference = 'SilentlyContinue'

# Windows PowerShell 5.1 serialises an array that carries ETS members as
# {"value": [...], "Count": n}; dropping the type data keeps arrays plain JSON arrays.
Remove-TypeData -TypeName System.Array -ErrorAction SilentlyContinue

$RunnerVersion = 1

# ---------------------------------------------------------------------------------------------
# Output and argument helpers
# ---------------------------------------------------------------------------------------------

function ConvertTo-AsciiJson {
    # 5.1's ConvertTo-Json writes non-ASCII raw, so the bytes would depend on a console encoding
    # switch that can fail silently (D-7): escape every non-ASCII UTF-16 unit as \uXXXX, which
    # is still the same JSON (a surrogate pair becomes two escapes, as JSON allows).
    param([string]$Json)
    if ($Json -notmatch '[^\x00-\x7F]') { return $Json }
    $builder = New-Object System.Text.StringBuilder ($Json.Length + 64)
    foreach ($ch in $Json.ToCharArray()) {
        $code = [int]$ch
        if ($code -lt 128) { $null = $builder.Append($ch) } else { $null = $builder.Append('\u').Append($code.ToString('x4')) }
    }
    return $builder.ToString()
}

function Write-ResultLine {
    param([Parameter(Mandatory = $true)] $Object)
    $json = ConvertTo-Json -InputObject $Object -Compress -Depth 6
    [Console]::Out.WriteLine((ConvertTo-AsciiJson -Json $json))
    [Console]::Out.Flush()
}

function Get-Arg {
    # A step argument, or $Default when it is absent or null. Arrays come back wrapped by
    # the caller with @() so a one-element list stays a list. The plan is parsed by .NET
    # (see the end of this file), so args are a dictionary.
    param($StepArgs, [string]$Name, $Default = $null)
    if ($null -eq $StepArgs) { return $Default }
    if ($StepArgs -is [System.Collections.IDictionary]) {
        # Keys, not Contains(): Dictionary implements IDictionary.Contains explicitly.
        if (-not (@($StepArgs.Keys) -ccontains $Name)) { return $Default }
        $value = $StepArgs[$Name]
    } else {
        $prop = $StepArgs.PSObject.Properties[$Name]
        if ($null -eq $prop) { return $Default }
        $value = $prop.Value
    }
    if ($null -eq $value) { return $Default }
    return $value
}

# The "cannot tell" being thrown: a hashtable whose content changes (no scope modifier needed).
$CannotTellState = @{ current = $null }

function New-CannotTell {
    # The step could not find out (issue #10): its line carries "cannot" with the reason and
    # the missing right, plus any facts it did learn, never a made-up fact.
    param([string]$Message, [string]$Reason, [string]$Need = '', $Facts = $null)
    $CannotTellState.current = @{ message = $Message; reason = $Reason; need = $Need; facts = $Facts }
    throw $Message
}

function Get-CannotTell {
    # The "cannot tell" an error stands for, or $null for a plain error.
    param($ErrorRecord)
    $state = $CannotTellState.current
    $CannotTellState.current = $null
    if ($null -ne $state -and [string]$ErrorRecord.Exception.Message -eq $state.message) { return $state }
    $text = Get-ErrorText $ErrorRecord
    # A module missing on this edition, or Windows refusing the account, is "cannot tell" too.
    if ($ErrorRecord.Exception -is [System.Management.Automation.CommandNotFoundException]) {
        return @{ message = $text; reason = 'cmdlet_missing'; need = ''; facts = $null }
    }
    if ($ErrorRecord.Exception -is [System.UnauthorizedAccessException] -or [string]$ErrorRecord.CategoryInfo.Category -eq 'PermissionDenied') {
        return @{ message = $text; reason = 'access_denied'; need = 'administrators'; facts = $null }
    }
    return $null
}

function Test-Administrator {
    # A full administrator token (a local admin over the network needs LocalAccountTokenFilterPolicy=1).
    $principal = New-Object Security.Principal.WindowsPrincipal ([Security.Principal.WindowsIdentity]::GetCurrent())
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

function ConvertTo-StringArray {
    # Always a real string array (also for one element or none): 5.1 unrolls pipelines.
    param($Value)
    $list = New-Object 'System.Collections.Generic.List[string]'
    foreach ($item in @($Value)) {
        if ($null -ne $item) { $list.Add([string]$item) }
    }
    return , $list.ToArray()
}

function Get-CatalogSpelling {
    # Windows prints some enum values in other cases (MsChapv2); the catalog's spelling wins.
    param($Value, [string[]]$Choices)
    if ($null -eq $Value) { return $null }
    $text = [string]$Value
    if ($text -eq '') { return $null }
    foreach ($choice in $Choices) {
        if ($choice -ieq $text) { return $choice }
    }
    return $text
}

function Get-ErrorText {
    param($ErrorRecord)
    $message = [string]$ErrorRecord.Exception.Message
    $command = $null
    if ($null -ne $ErrorRecord.InvocationInfo -and $null -ne $ErrorRecord.InvocationInfo.MyCommand) {
        $command = [string]$ErrorRecord.InvocationInfo.MyCommand.Name
    }
    # A plain `throw 'text'` already says what failed; a cmdlet's error gets its name first.
    if ($command -and [string]$ErrorRecord.FullyQualifiedErrorId -ne $message) { return $command + ' : ' + $message }
    return $message
}

function Test-SafeNativeArgument {
    # Windows PowerShell 5.1 does not escape embedded double quotes for native programs, so
    # a value holding one could split into several arguments: refuse it instead.
    param([string]$Value, [string]$What)
    if ($Value.Contains('"')) { throw ($What + ' must not contain a double quote') }
}

$AuthMethods = @('Pap', 'Chap', 'MSChapv2', 'Eap', 'MachineCertificate')
$TunnelTypes = @('Pptp', 'L2tp', 'Sstp', 'Ikev2', 'Automatic')
$EncryptionLevels = @('NoEncryption', 'Optional', 'Required', 'Maximum', 'Custom')
$L2tpAuthKinds = @('Psk', 'Certificate')
# catalog.IPSEC_VALUES in its order: a number from WMI (D-8) is read as the position in its
# list (an unverified assumption, docs/windows-setup.md; tests/test_contract.py keeps it equal).
$IPsecNames = [ordered]@{
    authentication_transform_constants = @('MD596', 'SHA196', 'SHA256128', 'GCMAES128', 'GCMAES192', 'GCMAES256', 'None')
    cipher_transform_constants         = @('DES', 'DES3', 'AES128', 'AES192', 'AES256', 'GCMAES128', 'GCMAES192', 'GCMAES256', 'None')
    encryption_method                  = @('DES', 'DES3', 'AES128', 'AES192', 'AES256', 'GCMAES128', 'GCMAES256')
    integrity_check_method             = @('MD5', 'SHA1', 'SHA256', 'SHA384')
    dh_group                           = @('None', 'Group1', 'Group2', 'Group14', 'ECP256', 'ECP384', 'Group24')
    pfs_group                          = @('None', 'PFS1', 'PFS2', 'PFS2048', 'ECP256', 'ECP384', 'PFSMM', 'PFS24')
}
$ServiceStartNames = @{ 0 = 'Boot'; 1 = 'System'; 2 = 'Automatic'; 3 = 'Manual'; 4 = 'Disabled' }

# ---------------------------------------------------------------------------------------------
# Shared readers
# ---------------------------------------------------------------------------------------------

function Get-ServiceState {
    param([string]$Name)
    $svc = @(Get-Service -Name $Name -ErrorAction SilentlyContinue) | Select-Object -First 1
    if ($null -eq $svc) { return $null }
    return [ordered]@{
        name         = [string]$svc.Name
        display_name = [string]$svc.DisplayName
        status       = [string]$svc.Status
        start_type   = [string]$svc.StartType
    }
}

function Get-ServiceKeyState {
    # HKLM\SYSTEM\CurrentControlSet\Services\<name> is readable by Users even when the service
    # may not be queried (D-1): it tells "no such service" from "not allowed to look", and its
    # Start value gives the start type (a delayed start reads Automatic, as .NET reports it).
    param([string]$Name)
    $key = Get-Item -LiteralPath (Join-Path 'HKLM:\SYSTEM\CurrentControlSet\Services' $Name) -ErrorAction SilentlyContinue
    if ($null -eq $key) { return $null }
    $start = $key.GetValue('Start', $null)
    if ($null -eq $start) { return $null }
    $startType = $ServiceStartNames[[int]$start]
    return [ordered]@{ exists = $true; name = [string]$key.PSChildName; start_type = $startType }
}

function ConvertTo-Unsigned {
    param($Raw, [string]$Kind)
    if ($Kind -eq 'DWord') { return [int64][BitConverter]::ToUInt32([BitConverter]::GetBytes([int32]$Raw), 0) }
    return [BitConverter]::ToUInt64([BitConverter]::GetBytes([int64]$Raw), 0)
}

function Read-RegistryValue {
    param([string]$Path, [string]$Name)
    $state = [ordered]@{ exists = $false; value = $null; type = $null }
    $key = Get-Item -LiteralPath $Path -ErrorAction SilentlyContinue
    if ($null -eq $key) { return $state }
    if (@($key.GetValueNames()) -notcontains $Name) { return $state }
    $kind = [string]$key.GetValueKind($Name)
    $raw = $key.GetValue($Name, $null, [Microsoft.Win32.RegistryValueOptions]::DoNotExpandEnvironmentNames)
    $state.exists = $true
    $state.type = $kind
    if ($kind -eq 'DWord' -or $kind -eq 'QWord') {
        $state.value = ConvertTo-Unsigned -Raw $raw -Kind $kind
    } elseif ($kind -eq 'MultiString') {
        $state.value = ConvertTo-StringArray $raw
    } elseif ($kind -eq 'Binary') {
        $state.value = [Convert]::ToBase64String([byte[]]$raw)
    } else {
        $state.value = [string]$raw
    }
    return $state
}

function Get-VpnConnections {
    # Both phone books the account can see (facts 7.1): the all-user one, then its own, which
    # under WINRS_NOPROFILE is never the employee's (D-3). Errors are not swallowed: an empty
    # phone book answers nothing, a refusal is an error.
    $list = New-Object 'System.Collections.Generic.List[object]'
    foreach ($c in @(Get-VpnConnection -AllUserConnection -ErrorAction Stop)) {
        if ($null -ne $c) { $list.Add($c) }
    }
    foreach ($c in @(Get-VpnConnection -ErrorAction Stop)) {
        if ($null -ne $c) { $list.Add($c) }
    }
    return , $list
}

function Get-PerUserVpnEntries {
    # Entries of every user's own phone book (rasphone.pbk: one INI section per connection),
    # made in Settings and invisible to Get-VpnConnection here (D-3 (b)). Other users'
    # profiles are readable by administrators only; Test-Path would answer a refusal with
    # "absent", so a non-admin gets "cannot tell" up front.
    if (-not (Test-Administrator)) {
        New-CannotTell -Reason 'access_denied' -Need 'administrators' -Message 'The portal''s account sees only all-user VPN connections; a per-user one (made in Settings) may exist, and listing those needs Administrators.'
    }
    $entries = New-Object 'System.Collections.Generic.List[object]'
    foreach ($dir in @(Get-ChildItem -LiteralPath (Join-Path $env:SystemDrive 'Users') -Directory -ErrorAction Stop)) {
        $pbk = Join-Path $dir.FullName 'AppData\Roaming\Microsoft\Network\Connections\Pbk\rasphone.pbk'
        if (-not [System.IO.File]::Exists($pbk)) { continue }
        foreach ($text in [System.IO.File]::ReadAllLines($pbk)) {
            if ($text -match '^\[(.+)\]\s*$') { $entries.Add(@{ user = [string]$dir.Name; name = $Matches[1] }) }
        }
    }
    return , $entries
}

function Find-VpnConnection {
    # By name, else the only connection the account can see; $null when there is none. Never a
    # guess (D-3): several candidates, or one that may be hidden in a user's own phone book,
    # are "cannot tell", so a fix never changes an unrelated connection.
    param([string]$Name)
    $all = Get-VpnConnections
    if ($Name) {
        foreach ($c in $all) { if ([string]$c.Name -eq $Name) { return $c } }
    } elseif ($all.Count -eq 1) {
        return $all[0]
    } elseif ($all.Count -gt 1) {
        $names = @($all | ForEach-Object { [string]$_.Name }) -join ', '
        New-CannotTell -Reason 'ambiguous' -Message ([string]$all.Count + ' VPN connections (' + $names + ') and the step names none: the runner does not guess which one is meant.')
    }
    foreach ($entry in (Get-PerUserVpnEntries)) {
        if (-not $Name -or $entry.name -eq $Name) {
            New-CannotTell -Reason 'not_visible' -Need 'all_user_connection' -Message ('The VPN connection ' + $entry.name + ' is a per-user connection of ' + $entry.user + ': the portal''s account cannot read or change it (make it an all-user connection).')
        }
    }
    return $null
}

function Get-VpnConnectionOrThrow {
    param([string]$Name)
    $conn = Find-VpnConnection -Name $Name
    if ($null -eq $conn) {
        if ($Name) { throw ('The VPN connection ' + $Name + ' cannot be found.') }
        throw 'No VPN connection is configured on this machine.'
    }
    return $conn
}

function ConvertTo-IPsecName {
    # The WMI class types all six as uint32 (D-8): a number is mapped through $IPsecNames; one
    # outside the table is "cannot tell", never passed on as if it were a name.
    param($Value, [string]$Key)
    if ($null -eq $Value) { return $null }
    $text = [string]$Value
    $number = 0
    if ([int]::TryParse($text, [ref]$number)) {
        $names = $IPsecNames[$Key]
        if ($number -ge 0 -and $number -lt $names.Count) { return $names[$number] }
        New-CannotTell -Reason 'unrecognised' -Message ('IPsecCustomPolicy.' + $Key + ' is ' + $text + ', which the runner cannot map to a name.')
    }
    return Get-CatalogSpelling -Value $text -Choices $IPsecNames[$Key]
}

function Get-IPsecPolicyFacts {
    param($Connection)
    $policy = @($Connection.IPsecCustomPolicy) | Where-Object { $null -ne $_ } | Select-Object -First 1
    if ($null -eq $policy) { return $null }
    return [ordered]@{
        authentication_transform_constants = ConvertTo-IPsecName -Value $policy.AuthenticationTransformConstants -Key 'authentication_transform_constants'
        cipher_transform_constants         = ConvertTo-IPsecName -Value $policy.CipherTransformConstants -Key 'cipher_transform_constants'
        encryption_method                  = ConvertTo-IPsecName -Value $policy.EncryptionMethod -Key 'encryption_method'
        integrity_check_method             = ConvertTo-IPsecName -Value $policy.IntegrityCheckMethod -Key 'integrity_check_method'
        dh_group                           = ConvertTo-IPsecName -Value $policy.DHGroup -Key 'dh_group'
        pfs_group                          = ConvertTo-IPsecName -Value $policy.PfsGroup -Key 'pfs_group'
    }
}

function Get-VpnSettingsState {
    param($Connection)
    $methods = New-Object 'System.Collections.Generic.List[string]'
    foreach ($m in @($Connection.AuthenticationMethod)) {
        if ($null -ne $m) { $methods.Add((Get-CatalogSpelling -Value $m -Choices $AuthMethods)) }
    }
    return [ordered]@{
        tunnel_type           = Get-CatalogSpelling -Value $Connection.TunnelType -Choices $TunnelTypes
        authentication_method = $methods.ToArray()
        encryption_level      = Get-CatalogSpelling -Value $Connection.EncryptionLevel -Choices $EncryptionLevels
        l2tp_ipsec_auth       = Get-CatalogSpelling -Value $Connection.L2tpIPsecAuth -Choices $L2tpAuthKinds
    }
}

function Resolve-TargetHost {
    # host arg, else the named VPN connection's server, else the default VPN connection's.
    param($StepArgs)
    $target = [string](Get-Arg $StepArgs 'host' '')
    if ($target) { return $target }
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'vpn_connection' ''))
    return [string]$conn.ServerAddress
}

function Test-PortSpec {
    # Does a firewall port filter value ('Any', '500', '1000-2000', a list) cover $Port?
    param($Spec, [int]$Port)
    foreach ($item in @($Spec)) {
        $text = ([string]$item).Trim()
        if ($text -eq 'Any') { return $true }
        if ($text -match '^(\d+)-(\d+)$') {
            if ($Port -ge [int]$Matches[1] -and $Port -le [int]$Matches[2]) { return $true }
        } elseif ($text -match '^\d+$') {
            if ([int]$text -eq $Port) { return $true }
        }
    }
    return $false
}

function Test-ProtocolSpec {
    param($Spec, [string]$Protocol)
    $text = [string]$Spec
    if ($text -eq 'Any' -or $text -eq '') { return $true }
    if ($text -ieq $Protocol) { return $true }
    if ($Protocol -eq 'TCP' -and $text -eq '6') { return $true }
    if ($Protocol -eq 'UDP' -and $text -eq '17') { return $true }
    return $false
}

$RebootMarkerKey = 'HKLM:\SOFTWARE\Kaiketsu'

function Get-RebootState {
    # Windows offers no query for a shutdown.exe countdown, so the runner remembers the one it
    # scheduled; a boot after the scheduled time means it has happened.
    $state = [ordered]@{ pending_reboot = $false; delay_seconds = $null }
    $key = Get-Item -LiteralPath $RebootMarkerKey -ErrorAction SilentlyContinue
    if ($null -eq $key) { return $state }
    $due = $key.GetValue('RebootDueUtc', $null)
    if ($null -eq $due) { return $state }
    $dueAt = [DateTime]::FromFileTimeUtc([int64]$due)
    $bootAt = (Get-CimInstance -ClassName Win32_OperatingSystem).LastBootUpTime.ToUniversalTime()
    if ($bootAt -lt $dueAt) {
        $state.pending_reboot = $true
        $state.delay_seconds = [int][Math]::Max(0, [Math]::Round(($dueAt - [DateTime]::UtcNow).TotalSeconds))
    }
    return $state
}

# ---------------------------------------------------------------------------------------------
# Check handlers: return @{ facts = ... }
# ---------------------------------------------------------------------------------------------

function Invoke-OsInfo {
    param($StepArgs)
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    $locale = $null
    try { $locale = [string](Get-WinSystemLocale).Name } catch { $locale = [string](Get-Culture).Name }
    return @{ facts = [ordered]@{
            computer_name = [string]$env:COMPUTERNAME
            caption       = ([string]$os.Caption).Trim()
            version       = [string]$os.Version
            build         = [int]$os.BuildNumber
            locale        = $locale
        }
    }
}

function Invoke-Service {
    param($StepArgs)
    $name = [string](Get-Arg $StepArgs 'name')
    $state = Get-ServiceState -Name $name
    if ($null -eq $state) {
        # 5.1 reports "no such service" also when it may not query one (D-1).
        $key = Get-ServiceKeyState -Name $name
        if ($null -ne $key) {
            New-CannotTell -Reason 'access_denied' -Need 'service_query' -Facts $key -Message ('The service ' + $name + ' exists but the portal''s account may not query its status (it needs Administrators or a query right on the service).')
        }
        return @{ facts = [ordered]@{
                exists = $false; name = $null; display_name = $null; status = $null; start_type = $null
            }
        }
    }
    $facts = [ordered]@{ exists = $true }
    foreach ($k in $state.Keys) { $facts[$k] = $state[$k] }
    return @{ facts = $facts }
}

function Invoke-RegistryValue {
    param($StepArgs)
    $path = [string](Get-Arg $StepArgs 'path')
    $name = [string](Get-Arg $StepArgs 'name')
    return @{ facts = (Read-RegistryValue -Path $path -Name $name) }
}

function Invoke-VpnConnection {
    param($StepArgs)
    $conn = Find-VpnConnection -Name ([string](Get-Arg $StepArgs 'name' ''))
    if ($null -eq $conn) {
        return @{ facts = [ordered]@{
                exists = $false; name = $null; server_address = $null; tunnel_type = $null
                authentication_method = $null; encryption_level = $null; l2tp_ipsec_auth = $null
                all_user_connection = $null; ipsec_custom_policy = $null
            }
        }
    }
    $settings = Get-VpnSettingsState -Connection $conn
    return @{ facts = [ordered]@{
            exists                = $true
            name                  = [string]$conn.Name
            server_address        = [string]$conn.ServerAddress
            tunnel_type           = $settings.tunnel_type
            authentication_method = $settings.authentication_method
            encryption_level      = $settings.encryption_level
            l2tp_ipsec_auth       = $settings.l2tp_ipsec_auth
            all_user_connection   = [bool]$conn.AllUserConnection
            ipsec_custom_policy   = Get-IPsecPolicyFacts -Connection $conn
        }
    }
}

function Get-ActiveFirewallProfiles {
    # The profiles in force: those of the connected networks (none connected: Public).
    $names = New-Object 'System.Collections.Generic.List[string]'
    foreach ($c in @(Get-NetConnectionProfile -ErrorAction Stop)) {
        $category = [string]$c.NetworkCategory
        $name = 'Public'
        if ($category -eq 'DomainAuthenticated') { $name = 'Domain' } elseif ($category -eq 'Private') { $name = 'Private' }
        if (-not $names.Contains($name)) { $names.Add($name) }
    }
    if ($names.Count -eq 0) { $names.Add('Public') }
    return , $names.ToArray()
}

function Test-RuleApplies {
    # Enabled rule in an active profile whose program filter can hold IKE/L2TP traffic (IKEEXT
    # runs in svchost, L2TP in the kernel): an app-specific rule never blocks the VPN (D-6).
    param($Rule, $AppFilter, [string[]]$Profiles, [string]$Direction)
    if ($Direction -and [string]$Rule.Direction -ne $Direction) { return $false }
    $ruleProfiles = @(([string]$Rule.Profile).Split(',') | ForEach-Object { $_.Trim() })
    $inProfile = ($ruleProfiles -contains 'Any') -or ($ruleProfiles -contains '')
    foreach ($p in $Profiles) { if ($ruleProfiles -contains $p) { $inProfile = $true } }
    if (-not $inProfile) { return $false }
    if ($null -ne $AppFilter) {
        $program = [string]$AppFilter.Program
        if (-not ($program -eq 'Any' -or $program -eq 'System' -or $program -eq '' -or $program -like '*\svchost.exe')) { return $false }
    }
    return $true
}

function Get-CoveredPorts {
    # The asked ports a rule's port filter covers. Outbound traffic to the server is matched on
    # the remote port, inbound on the local one; IKE uses the same port on both ends, so the
    # other side must match too.
    param($Rule, $PortFilter, [string]$Protocol, $Ports)
    $hits = New-Object 'System.Collections.Generic.List[int]'
    if ($null -eq $PortFilter) { return , $hits.ToArray() }
    if (-not (Test-ProtocolSpec -Spec $PortFilter.Protocol -Protocol $Protocol)) { return , $hits.ToArray() }
    $primary = $PortFilter.RemotePort
    $secondary = $PortFilter.LocalPort
    if ([string]$Rule.Direction -eq 'Inbound') {
        $primary = $PortFilter.LocalPort
        $secondary = $PortFilter.RemotePort
    }
    foreach ($port in $Ports) {
        if ((Test-PortSpec -Spec $primary -Port ([int]$port)) -and (Test-PortSpec -Spec $secondary -Port ([int]$port))) { $hits.Add([int]$port) }
    }
    return , $hits.ToArray()
}

function Invoke-FirewallRules {
    param($StepArgs)
    $protocol = [string](Get-Arg $StepArgs 'protocol')
    $ports = @(Get-Arg $StepArgs 'ports' @())
    $direction = [string](Get-Arg $StepArgs 'direction' '')
    $active = Get-ActiveFirewallProfiles
    $enforcing = New-Object 'System.Collections.Generic.List[string]'
    $defaultOutbound = 'Allow'
    foreach ($p in @(Get-NetFirewallProfile -PolicyStore ActiveStore -ErrorAction Stop)) {
        if (-not ($active -contains [string]$p.Name) -or [string]$p.Enabled -ne 'True') { continue }
        $enforcing.Add([string]$p.Name)
        # NotConfigured is Windows' default, Allow; a hardened PC blocks outbound by default and
        # then blocks UDP 500/4500 without any Block rule (D-6).
        if ([string]$p.DefaultOutboundAction -eq 'Block') { $defaultOutbound = 'Block' }
    }
    $profiles = $enforcing.ToArray()
    # ActiveStore also holds the rules Group Policy delivered (facts 7.4). One query per filter
    # kind, joined on InstanceID, instead of one association query per rule (D-6).
    $rules = @(Get-NetFirewallRule -PolicyStore ActiveStore -Enabled True -ErrorAction Stop)
    $portFilters = @{}
    foreach ($f in @(Get-NetFirewallPortFilter -PolicyStore ActiveStore -ErrorAction Stop)) { $portFilters[[string]$f.InstanceID] = $f }
    $appFilters = @{}
    foreach ($f in @(Get-NetFirewallApplicationFilter -PolicyStore ActiveStore -ErrorAction Stop)) { $appFilters[[string]$f.InstanceID] = $f }
    $blocking = New-Object 'System.Collections.Generic.List[object]'
    $blocked = New-Object 'System.Collections.Generic.List[int]'
    $allowed = New-Object 'System.Collections.Generic.List[int]'
    if ($profiles.Count -eq 0) { $rules = @() }  # a disabled profile enforces no rule
    foreach ($rule in $rules) {
        if ($null -eq $rule) { continue }
        $id = [string]$rule.InstanceID
        if (-not (Test-RuleApplies -Rule $rule -AppFilter $appFilters[$id] -Profiles $profiles -Direction $direction)) { continue }
        $filter = $portFilters[$id]
        $hits = Get-CoveredPorts -Rule $rule -PortFilter $filter -Protocol $protocol -Ports $ports
        if ($hits.Count -eq 0) { continue }
        if ([string]$rule.Action -eq 'Allow') {
            if ([string]$rule.Direction -eq 'Outbound') { foreach ($p in $hits) { $allowed.Add($p) } }
            continue
        }
        if ([string]$rule.Action -ne 'Block') { continue }
        foreach ($p in $hits) { if (-not $blocked.Contains($p)) { $blocked.Add($p) } }
        $program = 'Any'
        if ($null -ne $appFilters[$id]) { $program = [string]$appFilters[$id].Program }
        $blocking.Add([ordered]@{
                name         = [string]$rule.Name
                display_name = [string]$rule.DisplayName
                direction    = [string]$rule.Direction
                protocol     = [string]$filter.Protocol
                local_port   = ConvertTo-StringArray $filter.LocalPort
                remote_port  = ConvertTo-StringArray $filter.RemotePort
                profile      = ConvertTo-StringArray (([string]$rule.Profile).Split(',') | ForEach-Object { $_.Trim() })
                program      = $program
            })
    }
    if ($defaultOutbound -eq 'Block' -and ($direction -eq '' -or $direction -eq 'Outbound')) {
        $missing = New-Object 'System.Collections.Generic.List[string]'
        foreach ($port in $ports) {
            if (-not $allowed.Contains([int]$port)) {
                $missing.Add([string]$port)
                if (-not $blocked.Contains([int]$port)) { $blocked.Add([int]$port) }
            }
        }
        if ($missing.Count -gt 0) {
            $blocking.Add([ordered]@{
                    name         = 'DefaultOutboundAction'
                    display_name = ($profiles -join ', ') + ' profile: outbound blocked by default'
                    direction    = 'Outbound'
                    protocol     = $protocol
                    local_port   = ConvertTo-StringArray @('Any')
                    remote_port  = $missing.ToArray()
                    profile      = $profiles
                    program      = 'Any'
                })
        }
    }
    $blocked.Sort()
    return @{ facts = [ordered]@{
            blocking         = $blocking.ToArray()
            blocked_ports    = $blocked.ToArray()
            count            = $blocking.Count
            active_profiles  = $active
            default_outbound = $defaultOutbound
        }
    }
}

function Invoke-DnsResolve {
    param($StepArgs)
    $name = Resolve-TargetHost -StepArgs $StepArgs
    $addresses = New-Object 'System.Collections.Generic.List[string]'
    $errorText = $null
    # An IP address needs no lookup: Resolve-DnsName would reverse-resolve it and find no
    # address record, so a server configured by IP would "not resolve" (D-5).
    $literal = $null
    # (A dot or colon is required: .NET also reads a bare number such as "10" as an address.)
    if ($name -match '[.:]' -and [System.Net.IPAddress]::TryParse($name.Trim('[', ']'), [ref]$literal)) {
        return @{ facts = [ordered]@{ name = $name; resolved = $true; addresses = ConvertTo-StringArray @($literal.ToString()); error = $null } }
    }
    try {
        foreach ($record in @(Resolve-DnsName -Name $name -ErrorAction Stop)) {
            $ip = $record.PSObject.Properties['IPAddress']
            if ($null -ne $ip -and $ip.Value) { $addresses.Add([string]$ip.Value) }
        }
    } catch {
        if ($_.Exception -is [System.Management.Automation.CommandNotFoundException]) { throw }
        # The error id (DNS_ERROR_RCODE_NAME_ERROR,...), not the message, which is localised.
        $errorText = [string]$_.FullyQualifiedErrorId
    }
    if ($null -eq $errorText -and $addresses.Count -eq 0) { $errorText = 'no address records' }
    return @{ facts = [ordered]@{
            name      = $name
            resolved  = ($addresses.Count -gt 0)
            addresses = $addresses.ToArray()
            error     = $errorText
        }
    }
}

function Invoke-TcpConnect {
    param($StepArgs)
    $target = Resolve-TargetHost -StepArgs $StepArgs
    $port = [int](Get-Arg $StepArgs 'port')
    $client = New-Object System.Net.Sockets.TcpClient
    $reachable = $false
    try {
        # Bounded wait: a filtered port would otherwise hold the plan for about 21 seconds.
        $pending = $client.BeginConnect($target, $port, $null, $null)
        if ($pending.AsyncWaitHandle.WaitOne(5000)) {
            $client.EndConnect($pending)
            $reachable = $client.Connected
        }
    } catch {
        $reachable = $false
    } finally {
        $client.Close()
    }
    return @{ facts = [ordered]@{ host = $target; port = $port; reachable = [bool]$reachable } }
}

function Invoke-Ping {
    param($StepArgs)
    $target = Resolve-TargetHost -StepArgs $StepArgs
    $pinger = New-Object System.Net.NetworkInformation.Ping
    $reachable = $false
    $rtt = $null
    try {
        $reply = $pinger.Send($target, 2000)
        if ([string]$reply.Status -eq 'Success') {
            $reachable = $true
            $rtt = [int]$reply.RoundtripTime
        }
    } catch {
        $reachable = $false
    } finally {
        $pinger.Dispose()
    }
    return @{ facts = [ordered]@{ host = $target; reachable = $reachable; rtt_ms = $rtt } }
}

function Invoke-VpnEvents {
    param($StepArgs)
    $hours = [int](Get-Arg $StepArgs 'hours' 24)
    $max = [int](Get-Arg $StepArgs 'max' 20)
    # The single-log XPath query: unlike -FilterHashtable (TolerateQueryErrors) it reports an
    # unreadable log as an error instead of "no events" (D-2). The numbers are ints from the
    # catalog-checked args, so the query text holds no plan text.
    $ms = [int64]$hours * 3600000
    $xpath = "*[System[Provider[@Name='RasClient'] and (EventID=20221 or EventID=20225 or EventID=20226 or EventID=20227) and TimeCreated[timediff(@SystemTime) <= " + $ms + ']]]'
    # A refusal may come as a non-terminating error or as a terminating one: gather both.
    $collected = $null
    $caught = $null
    $events = @()
    try {
        $events = @(Get-WinEvent -LogName Application -FilterXPath $xpath -MaxEvents $max -ErrorAction SilentlyContinue -ErrorVariable collected)
    } catch {
        $caught = $_
    }
    foreach ($problem in @(@($collected) + @($caught))) {
        if ($null -eq $problem) { continue }
        $id = [string]$problem.FullyQualifiedErrorId
        # "No events were found" is an answer, not a failure (facts section 5).
        if ($id.StartsWith('NoMatchingEventsFound')) { continue }
        if ($problem.Exception -is [System.UnauthorizedAccessException] -or $id -match 'UnauthorizedAccess') {
            New-CannotTell -Reason 'access_denied' -Need 'event_log_readers' -Message ('Get-WinEvent : ' + $problem.Exception.Message + ' (the Application log; the portal''s account needs Event Log Readers)')
        }
        # One unreadable record must not hide the others; with none read, the step failed.
        if ($events.Count -eq 0) { throw $problem }
    }
    $items = New-Object 'System.Collections.Generic.List[object]'
    $lastError = $null
    $decided = $false
    foreach ($e in $events) {
        $values = @($e.Properties | ForEach-Object { $_.Value })
        $id = [int]$e.Id
        # 20221 names the connection in %5; the others in %3.
        $nameIndex = 2
        if ($id -eq 20221) { $nameIndex = 4 }
        $connection = $null
        if ($values.Count -gt $nameIndex) { $connection = [string]$values[$nameIndex] }
        $code = $null
        if (($id -eq 20227 -or $id -eq 20226) -and $values.Count -gt 3) {
            $parsed = 0
            if ([int]::TryParse(([string]$values[3]).Trim(), [ref]$parsed)) { $code = $parsed }
        }
        # The newest dial outcome decides: a later successful connection (20225) clears an error.
        if (-not $decided) {
            if ($id -eq 20225) { $decided = $true }
            elseif ($id -eq 20227 -and $null -ne $code) { $lastError = $code; $decided = $true }
        }
        $items.Add([ordered]@{
                id         = $id
                time       = $e.TimeCreated.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
                connection = $connection
                code       = $code
                message    = [string]$e.Message
            })
    }
    return @{ facts = [ordered]@{
            events          = $items.ToArray()
            count           = $items.Count
            last_error_code = $lastError
        }
    }
}

function Invoke-VpnDial {
    param($StepArgs)
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'name' ''))
    $entry = [string]$conn.Name
    Test-SafeNativeArgument -Value $entry -What 'VPN connection name'
    $dialArgs = New-Object 'System.Collections.Generic.List[string]'
    $dialArgs.Add($entry)
    if ([bool]$conn.AllUserConnection) {
        $dialArgs.Add('/PHONEBOOK:' + (Join-Path $env:ProgramData 'Microsoft\Network\Connections\Pbk\rasphone.pbk'))
    }
    # rasdial with no user name uses the credentials saved with the connection.
    # Under 'Stop', 5.1 turns a native program's first stderr line into a terminating
    # error; here the exit code is the answer, so native output must not throw.
    $ErrorActionPreference = 'Continue'
    $output = @(& rasdial.exe $dialArgs.ToArray() 2>&1 | ForEach-Object { [string]$_ })
    $code = [int]$LASTEXITCODE
    $connected = ($code -eq 0)
    if ($connected) {
        $null = & rasdial.exe $entry /DISCONNECT 2>&1
    }
    $message = (($output | Where-Object { $_.Trim() -ne '' }) -join ' ').Trim()
    $errorCode = $null
    if (-not $connected) { $errorCode = $code }
    $global:LASTEXITCODE = 0
    return @{ facts = [ordered]@{
            name       = $entry
            connected  = $connected
            error_code = $errorCode
            message    = $message
        }
    }
}

# ---------------------------------------------------------------------------------------------
# Fix handlers: return @{ before = ...; after = ...; changed = ... }
# ---------------------------------------------------------------------------------------------

function Test-Changed {
    param($Before, $After)
    $a = ConvertTo-Json -InputObject $Before -Compress -Depth 6
    $b = ConvertTo-Json -InputObject $After -Compress -Depth 6
    return ($a -ne $b)
}

function New-FixResult {
    param($Before, $After)
    return @{ before = $Before; after = $After; changed = (Test-Changed -Before $Before -After $After) }
}

function Get-ServiceFixState {
    param([string]$Name)
    $state = Get-ServiceState -Name $Name
    if ($null -eq $state) {
        if ($null -ne (Get-ServiceKeyState -Name $Name)) {
            New-CannotTell -Reason 'access_denied' -Need 'administrators' -Message ('Service ''' + $Name + ''': Access is denied (the portal''s account is not an administrator).')
        }
        throw ('Cannot find any service with service name ''' + $Name + '''.')
    }
    return [ordered]@{ status = $state.status; start_type = $state.start_type }
}

function Invoke-SetService {
    param($StepArgs)
    $name = [string](Get-Arg $StepArgs 'name')
    $startType = [string](Get-Arg $StepArgs 'start_type' '')
    $action = [string](Get-Arg $StepArgs 'action' '')
    $before = Get-ServiceFixState -Name $name
    # Start type first: a Disabled service cannot be started. 5.1 Set-Service has no -Force.
    if ($startType) { Set-Service -Name $name -StartupType $startType }
    if ($action -eq 'start') { Start-Service -Name $name }
    if ($action -eq 'stop') { Stop-Service -Name $name -Force }
    if ($action -eq 'restart') { Restart-Service -Name $name -Force }
    $after = Get-ServiceFixState -Name $name
    return New-FixResult -Before $before -After $after
}

function Invoke-SetRegistryValue {
    param($StepArgs)
    $path = [string](Get-Arg $StepArgs 'path')
    $name = [string](Get-Arg $StepArgs 'name')
    $type = [string](Get-Arg $StepArgs 'type' '')
    $value = Get-Arg $StepArgs 'value'
    $absent = [bool](Get-Arg $StepArgs 'absent' $false)
    $before = Read-RegistryValue -Path $path -Name $name
    if ($absent) {
        if ($before.exists) { Remove-ItemProperty -LiteralPath $path -Name $name }
    } else {
        if (-not (Test-Path -LiteralPath $path)) { $null = New-Item -Path $path -Force }
        if ($type -eq 'MultiString') {
            $data = ConvertTo-StringArray $value
        } elseif ($type -eq 'DWord') {
            $data = [uint32]$value
        } elseif ($type -eq 'QWord') {
            $data = [uint64]$value
        } else {
            $data = [string]$value
        }
        $null = New-ItemProperty -LiteralPath $path -Name $name -PropertyType $type -Value $data -Force
    }
    $after = Read-RegistryValue -Path $path -Name $name
    return New-FixResult -Before $before -After $after
}

function Invoke-SetVpnConnection {
    param($StepArgs)
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'name' ''))
    $before = Get-VpnSettingsState -Connection $conn
    $params = @{ Name = [string]$conn.Name; Force = $true }
    if ([bool]$conn.AllUserConnection) { $params.AllUserConnection = $true }
    $tunnel = [string](Get-Arg $StepArgs 'tunnel_type' '')
    if ($tunnel) { $params.TunnelType = $tunnel }
    $methods = Get-Arg $StepArgs 'authentication_method'
    if ($null -ne $methods) { $params.AuthenticationMethod = ConvertTo-StringArray $methods }
    $level = [string](Get-Arg $StepArgs 'encryption_level' '')
    if ($level) { $params.EncryptionLevel = $level }
    Set-VpnConnection @params
    $after = Get-VpnSettingsState -Connection (Get-VpnConnectionOrThrow -Name ([string]$conn.Name))
    return New-FixResult -Before $before -After $after
}

function Invoke-SetVpnIpsec {
    param($StepArgs)
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'name' ''))
    $before = [ordered]@{ ipsec_custom_policy = Get-IPsecPolicyFacts -Connection $conn }
    $params = @{ ConnectionName = [string]$conn.Name; Force = $true }
    if ([bool]$conn.AllUserConnection) { $params.AllUserConnection = $true }
    if ([bool](Get-Arg $StepArgs 'revert_to_default' $false)) {
        $params.RevertToDefault = $true
    } else {
        # All six are required by the CustomPolicy parameter set (facts 7.3).
        $params.AuthenticationTransformConstants = [string](Get-Arg $StepArgs 'authentication_transform_constants')
        $params.CipherTransformConstants = [string](Get-Arg $StepArgs 'cipher_transform_constants')
        $params.EncryptionMethod = [string](Get-Arg $StepArgs 'encryption_method')
        $params.IntegrityCheckMethod = [string](Get-Arg $StepArgs 'integrity_check_method')
        $params.DHGroup = [string](Get-Arg $StepArgs 'dh_group')
        $params.PfsGroup = [string](Get-Arg $StepArgs 'pfs_group')
    }
    $null = Set-VpnConnectionIPsecConfiguration @params
    $fresh = Get-VpnConnectionOrThrow -Name ([string]$conn.Name)
    $after = [ordered]@{ ipsec_custom_policy = Get-IPsecPolicyFacts -Connection $fresh }
    return New-FixResult -Before $before -After $after
}

function Test-ModuleLoggingRecords {
    # Does Module Logging (Group Policy) record this module's parameters in event 4103? (D-10)
    param([string]$Module)
    $key = Get-Item -LiteralPath 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\PowerShell\ModuleLogging' -ErrorAction SilentlyContinue
    if ($null -eq $key -or [int]$key.GetValue('EnableModuleLogging', 0) -ne 1) { return $false }
    $names = Get-Item -LiteralPath 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\PowerShell\ModuleLogging\ModuleNames' -ErrorAction SilentlyContinue
    if ($null -eq $names) { return $false }
    foreach ($valueName in @($names.GetValueNames())) {
        $pattern = [string]$names.GetValue($valueName, '')
        if ($pattern -and $Module -like $pattern) { return $true }
    }
    return $false
}

function Invoke-SetVpnPsk {
    param($StepArgs)
    $psk = [string](Get-Arg $StepArgs 'psk')
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'name' ''))
    # Set-VpnConnection is a VpnClient function: with Module Logging on for it, -L2tpPsk would
    # be written in clear to the PowerShell log (event 4103), so refuse before calling it.
    if (Test-ModuleLoggingRecords -Module 'VpnClient') {
        New-CannotTell -Reason 'module_logging' -Need 'no_module_logging' -Message 'PowerShell Module Logging records VpnClient''s parameters on this machine: setting the key would write it to the event log. Set it by hand or exclude VpnClient.'
    }
    $before = [ordered]@{ l2tp_ipsec_auth = (Get-VpnSettingsState -Connection $conn).l2tp_ipsec_auth }
    $params = @{ Name = [string]$conn.Name; L2tpPsk = $psk; Force = $true }
    if ([bool]$conn.AllUserConnection) { $params.AllUserConnection = $true }
    try {
        Set-VpnConnection @params
    } catch {
        # The key is a secret: it must not leave the machine in an error text.
        $text = Get-ErrorText $_
        if ($psk) { $text = $text.Replace($psk, '********') }
        throw $text
    }
    $fresh = Get-VpnConnectionOrThrow -Name ([string]$conn.Name)
    $after = [ordered]@{ l2tp_ipsec_auth = (Get-VpnSettingsState -Connection $fresh).l2tp_ipsec_auth }
    # The key cannot be read back on Windows, so setting it always counts as a change.
    return @{ before = $before; after = $after; changed = $true }
}

function Invoke-ScheduleReboot {
    param($StepArgs)
    # 30 seconds is shutdown.exe's own default for /t (facts 7.7).
    $delay = [int](Get-Arg $StepArgs 'delay_seconds' 30)
    $message = [string](Get-Arg $StepArgs 'message' '')
    $cancel = [bool](Get-Arg $StepArgs 'cancel' $false)
    $before = Get-RebootState
    # shutdown.exe reports on stderr; its exit code is checked below instead (see vpn_dial).
    $ErrorActionPreference = 'Continue'
    if ($cancel) {
        $null = & shutdown.exe /a 2>&1
        # 1116: no shutdown was in progress, which is what cancelling wants.
        if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 1116) { throw ('shutdown.exe /a failed with code ' + $LASTEXITCODE) }
        Remove-ItemProperty -LiteralPath $RebootMarkerKey -Name 'RebootDueUtc' -ErrorAction SilentlyContinue
    } else {
        # The comment travels as one argument variable: no double quotes, no control
        # characters, no trailing backslash (it would escape the closing quote), 512 chars.
        $comment = ($message -replace '[\x00-\x1f"]', ' ')
        if ($comment.Length -gt 512) { $comment = $comment.Substring(0, 512) }
        $comment = $comment.Trim().TrimEnd('\')
        if ($comment -eq '') { $comment = 'Kaiketsu: restart to apply the VPN fixes' }
        $null = & shutdown.exe /r /t $delay /c $comment /d p:4:1 2>&1
        $code = $LASTEXITCODE
        # 1190: a shutdown is already scheduled; the first one stands, nothing changes.
        if ($code -ne 0 -and $code -ne 1190) { throw ('shutdown.exe /r failed with code ' + $code) }
        if ($code -eq 0) {
            if (-not (Test-Path -LiteralPath $RebootMarkerKey)) { $null = New-Item -Path $RebootMarkerKey -Force -ErrorAction Stop }
            $due = [DateTime]::UtcNow.AddSeconds($delay).ToFileTimeUtc()
            $null = New-ItemProperty -LiteralPath $RebootMarkerKey -Name 'RebootDueUtc' -PropertyType QWord -Value $due -Force -ErrorAction Stop
        }
    }
    $global:LASTEXITCODE = 0
    $after = Get-RebootState
    return New-FixResult -Before $before -After $after
}

# ---------------------------------------------------------------------------------------------
# Dispatch: one handler per catalog kind (tests/test_contract.py reads this table).
# ---------------------------------------------------------------------------------------------

$Handlers = @{
    'os_info'            = 'Invoke-OsInfo'
    'service'            = 'Invoke-Service'
    'registry_value'     = 'Invoke-RegistryValue'
    'vpn_connection'     = 'Invoke-VpnConnection'
    'firewall_rules'     = 'Invoke-FirewallRules'
    'dns_resolve'        = 'Invoke-DnsResolve'
    'tcp_connect'        = 'Invoke-TcpConnect'
    'ping'               = 'Invoke-Ping'
    'vpn_events'         = 'Invoke-VpnEvents'
    'vpn_dial'           = 'Invoke-VpnDial'
    'set_service'        = 'Invoke-SetService'
    'set_registry_value' = 'Invoke-SetRegistryValue'
    'set_vpn_connection' = 'Invoke-SetVpnConnection'
    'set_vpn_ipsec'      = 'Invoke-SetVpnIpsec'
    'set_vpn_psk'        = 'Invoke-SetVpnPsk'
    'schedule_reboot'    = 'Invoke-ScheduleReboot'
}

function Invoke-Step {
    param($Step)
    $id = [string](Get-Arg $Step 'id' '')
    $kind = [string](Get-Arg $Step 'kind' '')
    $CannotTellState.current = $null
    $clock = [System.Diagnostics.Stopwatch]::StartNew()
    $line = [ordered]@{ step = $id; ok = $false }
    try {
        # -ccontains: kinds are case-sensitive, as in the catalog (a hashtable is not).
        if (-not (@($Handlers.Keys) -ccontains $kind)) { throw ('unknown step kind ''' + $kind + '''') }
        $result = & $Handlers[$kind] (Get-Arg $Step 'args')
        # A stray value emitted by a cmdlet would arrive before the result: keep the result.
        if ($result -is [array]) { $result = $result[-1] }
        $line.ok = $true
        if ($result.ContainsKey('facts')) {
            $line.facts = $result.facts
        } else {
            $line.before = $result.before
            $line.after = $result.after
            $line.changed = [bool]$result.changed
        }
    } catch {
        $line.ok = $false
        $cannot = Get-CannotTell $_
        if ($null -eq $cannot) {
            $line.error = Get-ErrorText $_
        } else {
            $line.error = $cannot.message
            $need = $null
            if ($cannot.need) { $need = $cannot.need }
            $line.cannot = [ordered]@{ reason = $cannot.reason; need = $need }
            if ($null -ne $cannot.facts) { $line.facts = $cannot.facts }
        }
    }
    $line.ms = [int]$clock.ElapsedMilliseconds
    Write-ResultLine $line
}

function Stop-WithFatal {
    param([string]$Message)
    Write-ResultLine ([ordered]@{ fatal = $Message })
    exit 1
}

# The plan is parsed by .NET, not ConvertFrom-Json: with Module Logging on, a cmdlet's
# parameters go to event 4103, and the plan may hold the VPN key (D-10).
$plan = $null
try {
    $null = [System.Reflection.Assembly]::Load('System.Web.Extensions, Version=4.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35')
    $serializer = New-Object System.Web.Script.Serialization.JavaScriptSerializer
    $serializer.MaxJsonLength = [int]::MaxValue
    $plan = $serializer.DeserializeObject($PlanJson)
} catch {
    Stop-WithFatal ('plan: not valid JSON: ' + $_.Exception.Message)
}
if (-not ($plan -is [System.Collections.IDictionary]) -or -not (@($plan.Keys) -ccontains 'steps')) {
    Stop-WithFatal 'plan: expected an object with "version" and "steps"'
}
if ([string]$plan['version'] -ne [string]$RunnerVersion) {
    Stop-WithFatal ('plan: version ' + [string]$plan['version'] + ' is not supported by this runner')
}
if ($null -ne $plan['steps'] -and -not ($plan['steps'] -is [array])) {
    Stop-WithFatal 'plan: "steps" must be a list'
}
$steps = @($plan['steps'])
$seen = New-Object System.Collections.Hashtable  # case-sensitive, unlike @{}
foreach ($step in $steps) {
    $stepId = $null
    if ($step -is [System.Collections.IDictionary]) { $stepId = Get-Arg $step 'id' }
    if (-not ($stepId -is [string])) {
        Stop-WithFatal 'plan: every step needs a string "id"'
    }
    if ($seen.ContainsKey($stepId)) {
        Stop-WithFatal ('plan: step id "' + $stepId + '" is used twice')
    }
    $seen[$stepId] = $true
}
$count = 0
foreach ($step in $steps) {
    Invoke-Step -Step $step
    $count += 1
}
Write-ResultLine ([ordered]@{ end = $true; steps = $count })
$global:LASTEXITCODE = 0
