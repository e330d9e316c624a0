# kaiketsu-bootstrap v1
# stdin: line 1 base64(runner.ps1, UTF-8), line 2 base64(plan JSON, UTF-8). docs/protocol.md.
# ConstrainedLanguage (AppLocker/WDAC) refuses the .NET calls below: say so plainly (review D-9).
if ($ExecutionContext.SessionState.LanguageMode -ne 'FullLanguage') {
    '{"fatal": "language_mode: PowerShell runs in ConstrainedLanguage mode here (AppLocker/WDAC); the runner needs FullLanguage"}'
    exit 1
}
$ProgressPreference = 'SilentlyContinue'
$ErrorActionPreference = 'Stop'
$utf8 = New-Object System.Text.UTF8Encoding($false)
try { [Console]::OutputEncoding = $utf8 } catch { }
$lines = @($input | ForEach-Object { [string]$_ } | Where-Object { $_.Trim() -ne '' })
if ($lines.Count -lt 2) {
    [Console]::Out.WriteLine('{"fatal": "bootstrap: expected the runner and the plan on stdin"}')
    exit 1
}
$runner = [ScriptBlock]::Create($utf8.GetString([Convert]::FromBase64String($lines[0].Trim())))
# The plan is a parameter value (data), never part of the code above.
$planJson = $utf8.GetString([Convert]::FromBase64String($lines[1].Trim()))
& $runner -PlanJson $planJson
exit $LASTEXITCODE
