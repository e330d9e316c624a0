# kaiketsu-agent v1 - Windows PowerShell 5.1 only. Runs as SYSTEM from the scheduled task
# that install.ps1 registers. Wire contract: agent/protocol.json and docs/protocol.md section 5.
#
# It enrols once (install.ps1 -Token), then long-polls the portal over HTTPS for work. A plan
# runs only if its signature verifies with the portal key pinned at enrolment, it names this
# machine, it has not expired and its task never ran here. The plan is handed to the project's
# own bootstrap.ps1 + runner.ps1 (installed beside this file) on stdin, exactly as over WinRM:
# the agent runs nothing but the runner's typed steps, and no script text comes from the portal.
# Each result line is posted the moment the runner writes it.
[CmdletBinding()]
param(
    [string]$PortalUrl = '',
    [string]$Token = '',
    [switch]$Enrol
)

$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$AgentVersion = 'kaiketsu-agent/1'
$AgentDir = Split-Path -Parent $MyInvocation.MyCommand.Path
$StateDir = Join-Path $env:ProgramData 'Kaiketsu\Agent'
$StatePath = Join-Path $StateDir 'state.json'
$LogPath = Join-Path $StateDir 'agent.log'
$Protocol = Get-Content -Raw -Encoding UTF8 -LiteralPath (Join-Path $AgentDir 'protocol.json') | ConvertFrom-Json
$MaxBackoff = 300
$KeptTasks = 500

Add-Type -AssemblyName System.Security
Add-Type -AssemblyName System.Web.Extensions

# .NET Framework 4.x may default to TLS 1.0/1.1: switch TLS 1.2 (and 1.3 where the OS has it) on.
$tls = [Net.ServicePointManager]::SecurityProtocol -bor [Net.SecurityProtocolType]::Tls12
if ([Enum]::GetNames([Net.SecurityProtocolType]) -contains 'Tls13') {
    $tls = $tls -bor [Net.SecurityProtocolType]'Tls13'
}
[Net.ServicePointManager]::SecurityProtocol = $tls

function Write-AgentLog([string]$Message) {
    # Never a plan, a line or the credential: only what the agent did and why.
    $stamp = [DateTime]::UtcNow.ToString('yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture)
    try { Add-Content -LiteralPath $LogPath -Value ($stamp + ' ' + $Message) -Encoding UTF8 } catch { }
}

function New-Serializer {
    $json = New-Object System.Web.Script.Serialization.JavaScriptSerializer
    $json.MaxJsonLength = 16777216
    return $json
}

function Protect-Secret([string]$Plain) {
    $bytes = [Text.Encoding]::UTF8.GetBytes($Plain)
    $sealed = [Security.Cryptography.ProtectedData]::Protect($bytes, $null, [Security.Cryptography.DataProtectionScope]::LocalMachine)
    return [Convert]::ToBase64String($sealed)
}

function Unprotect-Secret([string]$Sealed) {
    $bytes = [Convert]::FromBase64String($Sealed)
    $plain = [Security.Cryptography.ProtectedData]::Unprotect($bytes, $null, [Security.Cryptography.DataProtectionScope]::LocalMachine)
    return [Text.Encoding]::UTF8.GetString($plain)
}

function Set-SystemOnlyAcl([string]$Path) {
    # The credential file: SYSTEM alone (administrators can still take ownership; DPAPI machine
    # scope keeps it useless on any other PC).
    $acl = New-Object System.Security.AccessControl.FileSecurity
    $acl.SetAccessRuleProtection($true, $false)
    $system = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-18')
    $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($system, 'FullControl', 'Allow')
    $acl.AddAccessRule($rule)
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Read-State {
    if (-not (Test-Path -LiteralPath $StatePath)) { return $null }
    return (New-Serializer).DeserializeObject((Get-Content -Raw -Encoding UTF8 -LiteralPath $StatePath))
}

function Save-State($State) {
    if (-not (Test-Path -LiteralPath $StateDir)) { New-Item -ItemType Directory -Path $StateDir -Force | Out-Null }
    $text = (New-Serializer).Serialize($State)
    [IO.File]::WriteAllText($StatePath, $text, (New-Object System.Text.UTF8Encoding($false)))
    Set-SystemOnlyAcl $StatePath
}

function Get-BootId {
    $os = Get-CimInstance -ClassName Win32_OperatingSystem
    return $os.LastBootUpTime.ToUniversalTime().ToString('yyyyMMddHHmmss', [Globalization.CultureInfo]::InvariantCulture)
}

function Invoke-Portal([string]$Method, [string]$Path, [string]$Body, [string]$Credential, [int]$TimeoutMs) {
    # HttpWebRequest, not Invoke-RestMethod: 5.1's cmdlet throws on 204/401/429 and hides the
    # status; the machine's proxy (WinHTTP/WinINET as .NET reads it) is used with its account.
    $request = [Net.HttpWebRequest]::Create($script:Portal.TrimEnd('/') + $Path)
    $request.Method = $Method
    $request.Timeout = $TimeoutMs
    $request.ReadWriteTimeout = $TimeoutMs
    $request.UserAgent = $AgentVersion
    $request.Proxy = [Net.WebRequest]::GetSystemWebProxy()
    $request.Proxy.Credentials = [Net.CredentialCache]::DefaultNetworkCredentials
    if ($Credential -ne '') {
        $request.Headers.Add('Authorization', $Protocol.auth_scheme + ' ' + $Credential)
    }
    if ($Body -ne '') {
        $bytes = (New-Object System.Text.UTF8Encoding($false)).GetBytes($Body)
        $request.ContentType = 'application/json'
        $request.ContentLength = $bytes.Length
        $stream = $request.GetRequestStream()
        $stream.Write($bytes, 0, $bytes.Length)
        $stream.Close()
    }
    $response = $null
    try {
        $response = $request.GetResponse()
    } catch [Net.WebException] {
        $response = $_.Exception.Response
        if ($null -eq $response) { throw }
    }
    try {
        $reader = New-Object IO.StreamReader($response.GetResponseStream(), [Text.Encoding]::UTF8)
        $text = $reader.ReadToEnd()
        return @{ Status = [int]$response.StatusCode; Body = $text }
    } finally {
        $response.Close()
    }
}

function Register-Agent([string]$Code) {
    $body = @{ token = $Code; computer_name = $env:COMPUTERNAME; version = $AgentVersion; boot = (Get-BootId) }
    $answer = Invoke-Portal 'POST' $Protocol.paths.enrol ((New-Serializer).Serialize($body)) '' 30000
    if ($answer.Status -ne 200) { throw ('enrolment refused (' + $answer.Status + '): ' + $answer.Body) }
    $found = (New-Serializer).DeserializeObject($answer.Body)
    # The token is spent; the PC keeps only the credential, sealed to this machine.
    Save-State @{
        portal = $script:Portal
        machine = $found['machine']
        credential = (Protect-Secret $found['credential'])
        modulus = $found['public_key']['modulus']
        exponent = $found['public_key']['exponent']
        done_tasks = @()
        revoked = $false
    }
    Write-AgentLog ('enrolled as ' + $found['machine'])
}

function Test-KaiketsuEnvelope($State, $Answer, [double]$Now) {
    # The same checks, in the same order, as winsim/agent.py check_envelope. Returns the plan
    # JSON text, or throws why the plan is refused.
    $payload = [string]$Answer['payload']
    $signature = [Convert]::FromBase64String([string]$Answer['signature'])
    $rsa = New-Object Security.Cryptography.RSACryptoServiceProvider
    $key = New-Object Security.Cryptography.RSAParameters
    $key.Modulus = [Convert]::FromBase64String($State['modulus'])
    $key.Exponent = [Convert]::FromBase64String($State['exponent'])
    $rsa.ImportParameters($key)
    $bytes = [Text.Encoding]::ASCII.GetBytes($payload)
    if (-not $rsa.VerifyData($bytes, 'SHA256', $signature)) { throw 'signature does not verify with the portal key' }
    $envelope = (New-Serializer).DeserializeObject($payload)
    $names = @($envelope.Keys | Sort-Object)
    $expected = @($Protocol.envelope | Sort-Object)
    if (($names -join ',') -ne ($expected -join ',') -or [int]$envelope['v'] -ne [int]$Protocol.version) {
        throw 'envelope fields or version differ from this agent'
    }
    if ($envelope['machine'] -ne $State['machine']) { throw 'plan is for another machine' }
    if ([int64]$envelope['task'] -ne [int64]$Answer['task']) { throw 'envelope task differs from the answer task' }
    $skew = [double]$Protocol.clock_skew_seconds
    if ($Now -gt ([double]$envelope['expires'] + $skew)) { throw 'plan expired' }
    if ([double]$envelope['issued'] -gt ($Now + $skew)) { throw 'plan issued in the future' }
    if (@($State['done_tasks']) -contains [int64]$envelope['task']) { throw 'task already ran here (replay)' }
    $plan = (New-Serializer).DeserializeObject([string]$envelope['plan'])
    if ([string]$plan['job'] -ne [string]$envelope['job']) { throw 'plan job differs from the envelope job' }
    return [string]$envelope['plan']
}

function Send-Line([int64]$Task, [string]$Line, [string]$Credential) {
    $path = $Protocol.paths.lines.Replace('{task}', [string]$Task)
    $answer = Invoke-Portal 'POST' $path ($Line + "`n") $Credential 60000
    if ($answer.Status -ne 200) { Write-AgentLog ('line refused (' + $answer.Status + ')') }
}

function Invoke-Plan([int64]$Task, [string]$PlanJson, [string]$Credential) {
    # bootstrap.ps1 on the command line, runner and plan on stdin: the WinRM path, locally.
    $utf8 = New-Object System.Text.UTF8Encoding($false)
    $bootstrap = Get-Content -Raw -Encoding UTF8 -LiteralPath (Join-Path $AgentDir 'bootstrap.ps1')
    $runner = Get-Content -Raw -Encoding UTF8 -LiteralPath (Join-Path $AgentDir 'runner.ps1')
    $encoded = [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes($bootstrap))
    $info = New-Object Diagnostics.ProcessStartInfo
    $info.FileName = Join-Path $PSHOME 'powershell.exe'
    $info.Arguments = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand ' + $encoded
    $info.UseShellExecute = $false
    $info.RedirectStandardInput = $true
    $info.RedirectStandardOutput = $true
    $info.RedirectStandardError = $true
    $info.StandardOutputEncoding = $utf8
    $info.CreateNoWindow = $true
    $process = [Diagnostics.Process]::Start($info)
    $process.StandardInput.WriteLine([Convert]::ToBase64String($utf8.GetBytes($runner)))
    $process.StandardInput.WriteLine([Convert]::ToBase64String($utf8.GetBytes($PlanJson)))
    $process.StandardInput.Close()
    $errors = $process.StandardError.ReadToEndAsync()
    while ($true) {
        $line = $process.StandardOutput.ReadLine()
        if ($null -eq $line) { break }
        if ($line.Trim() -ne '') { Send-Line $Task $line $Credential }
    }
    $process.WaitForExit()
    $null = $errors.Result
}

function Start-AgentLoop {
    $state = Read-State
    if ($null -eq $state) { Write-AgentLog 'not enrolled: run install.ps1 with a token'; return }
    if ($state['revoked']) { Write-AgentLog 'credential was revoked: enrol again with a new token'; return }
    $script:Portal = [string]$state['portal']
    $credential = Unprotect-Secret $state['credential']
    $backoff = 5
    while ($true) {
        try {
            $query = '?boot=' + [Uri]::EscapeDataString((Get-BootId)) + '&version=' + [Uri]::EscapeDataString($AgentVersion)
            $answer = Invoke-Portal 'GET' ($Protocol.paths.work + $query) '' $credential 90000
            $backoff = 5
            if ($answer.Status -eq [int]$Protocol.status.revoked) {
                # Revoked (or re-enrolled elsewhere): stop for good, until a new enrolment.
                $state['revoked'] = $true
                Save-State $state
                Write-AgentLog 'the portal refused the credential: stopping'
                return
            }
            if ($answer.Status -eq [int]$Protocol.status.no_work) { continue }
            if ($answer.Status -eq [int]$Protocol.status.slow_down) { Start-Sleep -Seconds 10; continue }
            if ($answer.Status -ne 200) { continue }
            $work = (New-Serializer).DeserializeObject($answer.Body)
            $now = ([DateTimeOffset]::UtcNow).ToUnixTimeSeconds()
            try {
                $plan = Test-KaiketsuEnvelope $state $work $now
            } catch {
                $why = $_.Exception.Message
                Write-AgentLog ('plan refused: ' + $why)
                if ($why -notlike '*replay*') {
                    $fatal = (New-Serializer).Serialize(@{ fatal = ('agent: ' + $why) })
                    Send-Line ([int64]$work['task']) $fatal $credential
                }
                continue
            }
            $done = @($state['done_tasks']) + @([int64]$work['task'])
            if ($done.Count -gt $KeptTasks) { $done = $done[($done.Count - $KeptTasks)..($done.Count - 1)] }
            $state['done_tasks'] = $done
            Save-State $state
            Invoke-Plan ([int64]$work['task']) $plan $credential
        } catch {
            # The portal is away (network, proxy, TLS): wait longer each time, up to 5 minutes.
            Write-AgentLog ('portal unreachable: ' + $_.Exception.Message)
            Start-Sleep -Seconds $backoff
            $backoff = [Math]::Min($MaxBackoff, $backoff * 2)
        }
    }
}

if ($Enrol) {
    $script:Portal = $PortalUrl
    Register-Agent $Token
} else {
    Start-AgentLoop
}
