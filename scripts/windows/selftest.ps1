<#
.SYNOPSIS
    Kaiketsu self-test: run the portal's own runner on this PC over the seed article's read-only
    checks and the preflight, then print the facts and what each kind of check can do.

.DESCRIPTION
    Windows PowerShell 5.1, elevated or not. Nothing is changed on the machine: no fix, no dial.
    The runner and the bootstrap are the repository's own files, started exactly as the portal
    starts them over WinRM (the bootstrap as -EncodedCommand, runner and plan on stdin), so the
    first contact with real Windows takes a minute. Paste the whole output into an issue.

    Run locally, the checks use YOUR logon: an interactive user may read the event log and
    query services, which the portal's network logon may not. To see what the portal's account
    sees, give its credential: the same command then runs through WinRM on this PC
    (Invoke-Command -ComputerName localhost), under a network logon of that account.

    docs/windows-setup.md walks through the listener, the account and its rights.

.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File .\scripts\windows\selftest.ps1

.EXAMPLE
    powershell -NoProfile -ExecutionPolicy Bypass -File .\scripts\windows\selftest.ps1 -Credential (Get-Credential kaiketsu)
#>
param(
    [System.Management.Automation.PSCredential]$Credential = $null
)

$ErrorActionPreference = 'Stop'
$root = Split-Path -Parent (Split-Path -Parent $PSScriptRoot)
$runnerPath = Join-Path $root 'diagnostics\powershell\runner.ps1'
$bootstrapPath = Join-Path $root 'diagnostics\powershell\bootstrap.ps1'

# The read-only checks of kb/l2tp-ipsec-psk-negotiation.yaml (ids c1... as on the job page)
# and the portal's preflight (p-...). tests/test_selftest.py keeps this line equal to both.
$PlanJson = @'
{"version":1,"job":"selftest","steps":[{"id":"c1","kind":"service","args":{"name":"PolicyAgent"}},{"id":"c2","kind":"service","args":{"name":"IKEEXT"}},{"id":"c3","kind":"service","args":{"name":"BFE"}},{"id":"c4","kind":"registry_value","args":{"path":"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent","name":"AssumeUDPEncapsulationContextOnSendRule"}},{"id":"c5","kind":"registry_value","args":{"path":"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\RasMan\\Parameters","name":"ProhibitIpSec"}},{"id":"c6","kind":"vpn_connection","args":{}},{"id":"c7","kind":"vpn_connection","args":{}},{"id":"c8","kind":"vpn_connection","args":{}},{"id":"c9","kind":"vpn_connection","args":{}},{"id":"c10","kind":"vpn_connection","args":{}},{"id":"c11","kind":"firewall_rules","args":{"protocol":"UDP","ports":[500,1701,4500],"direction":"Outbound"}},{"id":"c12","kind":"dns_resolve","args":{}},{"id":"c13","kind":"ping","args":{}},{"id":"c14","kind":"vpn_events","args":{"hours":72,"max":20}},{"id":"p-os_info","kind":"os_info","args":{}},{"id":"p-service","kind":"service","args":{"name":"PolicyAgent"}},{"id":"p-registry_value","kind":"registry_value","args":{"path":"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\PolicyAgent","name":"AssumeUDPEncapsulationContextOnSendRule"}},{"id":"p-vpn_connection","kind":"vpn_connection","args":{}},{"id":"p-firewall_rules","kind":"firewall_rules","args":{"protocol":"UDP","ports":[500,4500]}},{"id":"p-dns_resolve","kind":"dns_resolve","args":{"host":"localhost"}},{"id":"p-tcp_connect","kind":"tcp_connect","args":{"host":"127.0.0.1","port":5985}},{"id":"p-ping","kind":"ping","args":{"host":"127.0.0.1"}},{"id":"p-vpn_events","kind":"vpn_events","args":{"hours":1,"max":1}}]}
'@

# The rights a "cannot" names, and how to grant them (diagnostics/catalog.py RIGHTS).
$Grants = @{
    administrators      = "Add-LocalGroupMember -SID 'S-1-5-32-544' -Member '<account>'"
    event_log_readers   = "Add-LocalGroupMember -SID 'S-1-5-32-573' -Member '<account>'"
    service_query       = 'docs/windows-setup.md, step 4 (sc.exe sdset on PolicyAgent, IKEEXT, RasMan, BFE, SstpSvc)'
    all_user_connection = 'recreate the VPN connection with Add-VpnConnection -AllUserConnection'
    full_language       = 'allow the runner in the AppLocker/WDAC policy (docs/windows-setup.md)'
    no_module_logging   = 'leave VpnClient out of Module Logging (docs/windows-setup.md)'
}

$utf8 = New-Object System.Text.UTF8Encoding($false)
$stdin = [Convert]::ToBase64String([IO.File]::ReadAllBytes($runnerPath)) + "`n" + [Convert]::ToBase64String($utf8.GetBytes($PlanJson)) + "`n"
$encoded = [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes([IO.File]::ReadAllText($bootstrapPath)))

$probe = {
    param([string]$Encoded, [string]$Stdin)
    $who = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal ($who)
    $elevated = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    'account: ' + $who.Name + '; administrator token: ' + $elevated + '; PowerShell ' + $PSVersionTable.PSVersion + '; language mode: ' + $ExecutionContext.SessionState.LanguageMode
    # Native stderr must not stop the probe: the exit code and the JSON lines are the answer.
    $ErrorActionPreference = 'Continue'
    $Stdin | & powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand $Encoded 2>$null
    'exit code: ' + $LASTEXITCODE
}

$clock = [Diagnostics.Stopwatch]::StartNew()
if ($null -ne $Credential) {
    $output = @(Invoke-Command -ComputerName localhost -Credential $Credential -ScriptBlock $probe -ArgumentList $encoded, $stdin)
} else {
    $output = @(& $probe $encoded $stdin)
}
$seconds = [Math]::Round($clock.Elapsed.TotalSeconds, 1)

$os = Get-CimInstance -ClassName Win32_OperatingSystem -ErrorAction SilentlyContinue
'== Kaiketsu self-test (' + [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ') + ', ' + $seconds + ' s) =='
if ($null -ne $os) { 'Windows: ' + $os.Caption + ' ' + $os.Version + ' (' + (Get-Culture).Name + ')' }

$results = New-Object 'System.Collections.Generic.List[object]'
$kinds = @{}
foreach ($step in @((ConvertFrom-Json -InputObject $PlanJson).steps)) { $kinds[$step.id] = $step.kind }
foreach ($line in $output) {
    $text = [string]$line
    if (-not $text.StartsWith('{')) { $text; continue }
    $parsed = $null
    try { $parsed = ConvertFrom-Json -InputObject $text } catch { 'not JSON: ' + $text; continue }
    if ($null -ne $parsed.PSObject.Properties['fatal']) { 'FATAL: ' + $parsed.fatal; continue }
    if ($null -eq $parsed.PSObject.Properties['step']) { continue }
    $results.Add($parsed)
}

''
'== Steps (facts as the portal receives them) =='
foreach ($r in $results) {
    $kind = $kinds[[string]$r.step]
    if ($r.ok) {
        $verdict = 'OK    '
        $detail = ConvertTo-Json -InputObject $r.facts -Compress -Depth 6
        if ($null -ne $r.PSObject.Properties['before']) { $detail = 'changed=' + $r.changed }
    } elseif ($null -ne $r.PSObject.Properties['cannot']) {
        $verdict = 'CANNOT'
        $detail = [string]$r.cannot.reason + ' (needs ' + [string]$r.cannot.need + '): ' + [string]$r.error
    } else {
        $verdict = 'ERROR '
        $detail = [string]$r.error
    }
    '{0} {1,-18} {2,-15} {3,6} ms  {4}' -f $verdict, $r.step, $kind, $r.ms, $detail
}

''
'== What each kind of check can do here =='
$table = [ordered]@{}
foreach ($r in $results) {
    $kind = $kinds[[string]$r.step]
    if (-not ([string]$r.step).StartsWith('p-')) { continue }
    if ($r.ok) { $table[$kind] = 'works' }
    elseif ($null -ne $r.PSObject.Properties['cannot']) {
        $need = [string]$r.cannot.need
        $grant = ''
        if ($Grants.ContainsKey($need)) { $grant = ' -> ' + $Grants[$need] }
        $table[$kind] = 'cannot: ' + [string]$r.cannot.reason + ' ' + $need + $grant
    } else { $table[$kind] = 'error: ' + [string]$r.error }
}
$table['vpn_dial'] = 'not tested (it would dial the VPN)'
foreach ($k in $table.Keys) { '{0,-15} {1}' -f $k, $table[$k] }

''
'== Raw lines (paste with the above into an issue) =='
$output | ForEach-Object { [string]$_ }
