# Kaiketsu agent installer - Windows PowerShell 5.1, run elevated (Intune platform script,
# Group Policy startup script, or by hand):
#   powershell -ExecutionPolicy Bypass -File install.ps1 -PortalUrl https://kaiketsu.example.com -Token <one-time code>
# Copies the agent beside the project's runner, enrols with the one-time code (the PC keeps a
# machine credential sealed with DPAPI, readable by SYSTEM only), and registers a scheduled
# task that starts the agent as SYSTEM at every boot and restarts it if it stops.
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)][string]$PortalUrl,
    [Parameter(Mandatory = $true)][string]$Token,
    [string]$TaskName = 'Kaiketsu Agent'
)

$ErrorActionPreference = 'Stop'
$principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
    throw 'Run install.ps1 from an elevated PowerShell (or as SYSTEM from Intune / Group Policy).'
}
if (-not $PortalUrl.StartsWith('https://')) {
    throw 'The portal URL must start with https:// (the agent talks to the portal over TLS only).'
}

$source = Split-Path -Parent $MyInvocation.MyCommand.Path
$target = Join-Path $env:ProgramFiles 'Kaiketsu\Agent'
New-Item -ItemType Directory -Path $target -Force | Out-Null
# The runner and its bootstrap are the portal's own (diagnostics/powershell/): beside this file
# in a bundle, or in the checkout this file comes from.
$runnerDir = Join-Path (Split-Path -Parent $source) 'diagnostics\powershell'
foreach ($name in @('kaiketsu-agent.ps1', 'protocol.json', 'bootstrap.ps1', 'runner.ps1')) {
    $from = Join-Path $source $name
    if (-not (Test-Path -LiteralPath $from)) { $from = Join-Path $runnerDir $name }
    Copy-Item -LiteralPath $from -Destination (Join-Path $target $name) -Force
}

$agent = Join-Path $target 'kaiketsu-agent.ps1'
& (Join-Path $PSHOME 'powershell.exe') -NoProfile -NonInteractive -ExecutionPolicy Bypass -File $agent -Enrol -PortalUrl $PortalUrl -Token $Token
if ($LASTEXITCODE -ne 0) { throw 'Enrolment failed: see %ProgramData%\Kaiketsu\Agent\agent.log' }

$action = New-ScheduledTaskAction -Execute (Join-Path $PSHOME 'powershell.exe') -Argument ('-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "' + $agent + '"')
$trigger = New-ScheduledTaskTrigger -AtStartup
$runAs = New-ScheduledTaskPrincipal -UserId 'S-1-5-18' -LogonType ServiceAccount -RunLevel Highest
$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) -StartWhenAvailable -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -MultipleInstances IgnoreNew
Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger -Principal $runAs -Settings $settings -Force | Out-Null
Start-ScheduledTask -TaskName $TaskName
Write-Output ('Kaiketsu agent installed and started (scheduled task "' + $TaskName + '").')
