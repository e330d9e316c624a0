# Kaiketsu on-host runner: Windows PowerShell 5.1 only (no ??, ?., ternary, && or ||).
# Runs a plan of typed steps and writes one JSON line per step the moment it ends.
# Contract: docs/protocol.md. Step kinds and fact keys: diagnostics/catalog.py.
# Every plan value is data: it is read from the parsed plan object and passed as a cmdlet
# parameter or an argument variable, never concatenated into code.
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

function Write-ResultLine {
    param([Parameter(Mandatory = $true)] $Object)
    $json = ConvertTo-Json -InputObject $Object -Compress -Depth 6
    [Console]::Out.WriteLine($json)
    [Console]::Out.Flush()
}

function Get-Arg {
    # A step argument, or $Default when it is absent or null. Arrays come back wrapped by
    # the caller with @() so a one-element list stays a list.
    param($StepArgs, [string]$Name, $Default = $null)
    if ($null -eq $StepArgs) { return $Default }
    $prop = $StepArgs.PSObject.Properties[$Name]
    if ($null -eq $prop) { return $Default }
    if ($null -eq $prop.Value) { return $Default }
    return $prop.Value
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
    # Both phone books (facts 7.1): the all-user one first, then the caller's own.
    $list = New-Object 'System.Collections.Generic.List[object]'
    foreach ($c in @(Get-VpnConnection -AllUserConnection -ErrorAction SilentlyContinue)) {
        if ($null -ne $c) { $list.Add($c) }
    }
    foreach ($c in @(Get-VpnConnection -ErrorAction SilentlyContinue)) {
        if ($null -ne $c) { $list.Add($c) }
    }
    return , $list
}

function Find-VpnConnection {
    # The named connection, else the first L2TP one, else the first one; $null if none.
    param([string]$Name)
    $all = Get-VpnConnections
    if ($Name) {
        foreach ($c in $all) { if ([string]$c.Name -eq $Name) { return $c } }
        return $null
    }
    foreach ($c in $all) { if ([string]$c.TunnelType -eq 'L2tp') { return $c } }
    if ($all.Count -gt 0) { return $all[0] }
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

function Get-IPsecPolicyFacts {
    param($Connection)
    $policy = @($Connection.IPsecCustomPolicy) | Where-Object { $null -ne $_ } | Select-Object -First 1
    if ($null -eq $policy) { return $null }
    return [ordered]@{
        authentication_transform_constants = [string]$policy.AuthenticationTransformConstants
        cipher_transform_constants         = [string]$policy.CipherTransformConstants
        encryption_method                  = [string]$policy.EncryptionMethod
        integrity_check_method             = [string]$policy.IntegrityCheckMethod
        dh_group                           = [string]$policy.DHGroup
        pfs_group                          = [string]$policy.PfsGroup
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

function Invoke-FirewallRules {
    param($StepArgs)
    $protocol = [string](Get-Arg $StepArgs 'protocol')
    $ports = @(Get-Arg $StepArgs 'ports' @())
    $direction = [string](Get-Arg $StepArgs 'direction' '')
    $query = @{ Enabled = 'True'; Action = 'Block'; PolicyStore = 'ActiveStore' }
    if ($direction) { $query.Direction = $direction }
    # ActiveStore also holds the rules Group Policy delivered (facts 7.4).
    $rules = @(Get-NetFirewallRule @query -ErrorAction SilentlyContinue)
    $blocking = New-Object 'System.Collections.Generic.List[object]'
    $blocked = New-Object 'System.Collections.Generic.List[int]'
    foreach ($rule in $rules) {
        if ($null -eq $rule) { continue }
        $filter = $rule | Get-NetFirewallPortFilter
        if (-not (Test-ProtocolSpec -Spec $filter.Protocol -Protocol $protocol)) { continue }
        $ruleDirection = [string]$rule.Direction
        # Outbound traffic to the server is matched on the remote port, inbound on the local one;
        # IKE uses the same port on both ends, so the other side must allow it too.
        $primary = $filter.RemotePort
        $secondary = $filter.LocalPort
        if ($ruleDirection -eq 'Inbound') {
            $primary = $filter.LocalPort
            $secondary = $filter.RemotePort
        }
        $hits = @()
        foreach ($port in $ports) {
            if ((Test-PortSpec -Spec $primary -Port ([int]$port)) -and (Test-PortSpec -Spec $secondary -Port ([int]$port))) {
                $hits += [int]$port
            }
        }
        if ($hits.Count -eq 0) { continue }
        foreach ($p in $hits) { if (-not $blocked.Contains($p)) { $blocked.Add($p) } }
        $blocking.Add([ordered]@{
                name         = [string]$rule.Name
                display_name = [string]$rule.DisplayName
                direction    = $ruleDirection
                protocol     = [string]$filter.Protocol
                local_port   = ConvertTo-StringArray $filter.LocalPort
                remote_port  = ConvertTo-StringArray $filter.RemotePort
            })
    }
    $blocked.Sort()
    return @{ facts = [ordered]@{
            blocking      = $blocking.ToArray()
            blocked_ports = $blocked.ToArray()
            count         = $blocking.Count
        }
    }
}

function Invoke-DnsResolve {
    param($StepArgs)
    $name = Resolve-TargetHost -StepArgs $StepArgs
    $addresses = New-Object 'System.Collections.Generic.List[string]'
    $errorText = $null
    try {
        foreach ($record in @(Resolve-DnsName -Name $name -ErrorAction Stop)) {
            $ip = $record.PSObject.Properties['IPAddress']
            if ($null -ne $ip -and $ip.Value) { $addresses.Add([string]$ip.Value) }
        }
    } catch {
        $errorText = Get-ErrorText $_
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
    $filter = @{
        LogName      = 'Application'
        ProviderName = 'RasClient'
        Id           = @(20227, 20226, 20225, 20221)
        StartTime    = (Get-Date).AddHours(-$hours)
    }
    $events = @()
    try {
        $events = @(Get-WinEvent -FilterHashtable $filter -MaxEvents $max -ErrorAction Stop)
    } catch {
        # "No events were found" is an answer, not a failure (facts section 5).
        if (-not ([string]$_.FullyQualifiedErrorId).StartsWith('NoMatchingEventsFound')) { throw }
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
                time       = $e.TimeCreated.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ')
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
    if ($null -eq $state) { throw ('Cannot find any service with service name ''' + $Name + '''.') }
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

function Invoke-SetVpnPsk {
    param($StepArgs)
    $psk = [string](Get-Arg $StepArgs 'psk')
    $conn = Get-VpnConnectionOrThrow -Name ([string](Get-Arg $StepArgs 'name' ''))
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
    $id = [string]$Step.id
    $kind = [string]$Step.kind
    $clock = [System.Diagnostics.Stopwatch]::StartNew()
    $line = [ordered]@{ step = $id; ok = $false }
    try {
        # -ccontains: kinds are case-sensitive, as in the catalog (a hashtable is not).
        if (-not (@($Handlers.Keys) -ccontains $kind)) { throw ('unknown step kind ''' + $kind + '''') }
        $result = & $Handlers[$kind] $Step.args
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
        $line.error = Get-ErrorText $_
    }
    $line.ms = [int]$clock.ElapsedMilliseconds
    Write-ResultLine $line
}

function Stop-WithFatal {
    param([string]$Message)
    Write-ResultLine ([ordered]@{ fatal = $Message })
    exit 1
}

$plan = $null
try {
    $plan = ConvertFrom-Json -InputObject $PlanJson
} catch {
    Stop-WithFatal ('plan: not valid JSON: ' + $_.Exception.Message)
}
if ($null -eq $plan -or $plan -is [array] -or $null -eq $plan.PSObject.Properties['steps']) {
    Stop-WithFatal 'plan: expected an object with "version" and "steps"'
}
if ([string]$plan.version -ne [string]$RunnerVersion) {
    Stop-WithFatal ('plan: version ' + [string]$plan.version + ' is not supported by this runner')
}
if ($null -ne $plan.steps -and -not ($plan.steps -is [array])) {
    Stop-WithFatal 'plan: "steps" must be a list'
}
$steps = @($plan.steps)
$seen = New-Object System.Collections.Hashtable  # case-sensitive, unlike @{}
foreach ($step in $steps) {
    $idProp = $null
    if ($null -ne $step) { $idProp = $step.PSObject.Properties['id'] }
    if ($null -eq $idProp -or -not ($idProp.Value -is [string])) {
        Stop-WithFatal 'plan: every step needs a string "id"'
    }
    if ($seen.ContainsKey($idProp.Value)) {
        Stop-WithFatal ('plan: step id "' + $idProp.Value + '" is used twice')
    }
    $seen[$idProp.Value] = $true
}
$count = 0
foreach ($step in $steps) {
    Invoke-Step -Step $step
    $count += 1
}
Write-ResultLine ([ordered]@{ end = $true; steps = $count })
$global:LASTEXITCODE = 0
