# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ctl_global_optspecs
    string join \n socket= config= o/output= h/help V/version
end

function __fish_ctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ctl_using_subcommand
    set -l cmd (__fish_ctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ctl -n "__fish_ctl_needs_command" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_needs_command" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_needs_command" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_needs_command" -s V -l version -d 'Print version'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "status" -d 'Daemon, running version, disk vs runtime, and a row per script'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "reload" -d 'Apply (or preview) what is on disk; prints the plan'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "events" -d 'Follow reload and lifecycle events'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "start" -d 'Start a stopped script (services) or resume its schedule (periodic). Several names, globs or --all: a row per script; --all skips disabled scripts'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "stop" -d 'Stop a script gracefully and keep it stopped (several: a row per script)'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "restart" -d 'Stop then start a script (several: a row per script; --all skips disabled ones)'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "run" -d 'Run a script once now, also when disabled or between intervals; prints the run id. A script that is already running is not run again (exit 1, naming its run)'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "history" -d 'Versions and refused attempts, newest first; `history show V` prints V\'s files; `history --actions` lists who started, stopped, restarted or ran which script'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "diff" -d 'Difference between two versions: unified diff of the files and the field-level plan'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "rollback" -d 'Go back to VERSION [default: the version before the running one], as a new version; the files on disk are rewritten to match'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "logs" -d 'A script\'s output: the last lines, then with -f live lines'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "completions" -d 'Print shell completions'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c ctl -n "__fish_ctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ctl -n "__fish_ctl_using_subcommand status" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand status" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand status" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand status" -l check -d 'Exit 0 when every script named (default: every enabled one) is running, waiting or idle after a run that succeeded; else 6, printing each one that is not'
complete -c ctl -n "__fish_ctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l plan -d 'Apply only if this plan (from --dry-run) is still what would be applied' -r
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l timeout -d 'With --wait: stop waiting after DUR (exit 6); the verification goes on' -r
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand reload" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l dry-run -d 'Preview only: print the plan and its id, change nothing'
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l exit-code -d 'With --dry-run: exit 5 when the plan has changes, 0 when it has none'
complete -c ctl -n "__fish_ctl_using_subcommand reload" -l wait -d 'Return once the new version is verified (reload.verify): 0 when every script it started or restarted is ready, 3 when it was rolled back, 6 when it was not verified and kept'
complete -c ctl -n "__fish_ctl_using_subcommand reload" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand events" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand events" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand events" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand start" -l timeout -d 'With --wait: wait at most DUR [default: the config\'s reload.verify]' -r
complete -c ctl -n "__fish_ctl_using_subcommand start" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand start" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand start" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand start" -l all -d 'Every script in the config'
complete -c ctl -n "__fish_ctl_using_subcommand start" -l wait -d 'Return when the started run is ready (a service alive for its ready_after; a periodic script\'s run exited 0): 0, else 6 naming why (exited, crash-looping, timeout)'
complete -c ctl -n "__fish_ctl_using_subcommand start" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand stop" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand stop" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand stop" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand stop" -l all -d 'Every script in the config'
complete -c ctl -n "__fish_ctl_using_subcommand stop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand restart" -l timeout -d 'With --wait: wait at most DUR [default: the config\'s reload.verify]' -r
complete -c ctl -n "__fish_ctl_using_subcommand restart" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand restart" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand restart" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand restart" -l all -d 'Every script in the config'
complete -c ctl -n "__fish_ctl_using_subcommand restart" -l wait -d 'Return when the started run is ready (a service alive for its ready_after; a periodic script\'s run exited 0): 0, else 6 naming why (exited, crash-looping, timeout)'
complete -c ctl -n "__fish_ctl_using_subcommand restart" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand run" -l timeout -d 'With --wait: stop waiting after DUR (exit 6); the run goes on' -r
complete -c ctl -n "__fish_ctl_using_subcommand run" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand run" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand run" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand run" -l all -d 'Every script in the config'
complete -c ctl -n "__fish_ctl_using_subcommand run" -l wait -d 'Return when this run ends (with several: every run): exit 0 if it exited 0, else 6'
complete -c ctl -n "__fish_ctl_using_subcommand run" -l follow -d 'With --wait: print the run\'s lines meanwhile (as `ctl logs` does)'
complete -c ctl -n "__fish_ctl_using_subcommand run" -l raw -d 'With --follow: stdout holds only the run\'s output (as `ctl logs --raw`); ctl\'s own lines go to stderr'
complete -c ctl -n "__fish_ctl_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -l limit -d 'At most this many entries' -r
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -l actions -d 'List the control actions (start, stop, restart, run: time, uid, script, result) instead of the config versions'
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -f -a "show" -d 'The files of one version'
complete -c ctl -n "__fish_ctl_using_subcommand history; and not __fish_seen_subcommand_from show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from show" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from show" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from show" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from help" -f -a "show" -d 'The files of one version'
complete -c ctl -n "__fish_ctl_using_subcommand history; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ctl -n "__fish_ctl_using_subcommand diff" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand diff" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand diff" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand diff" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -l dry-run -d 'Preview the plan only'
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -l exit-code -d 'With --dry-run: exit 5 when the plan has changes'
complete -c ctl -n "__fish_ctl_using_subcommand rollback" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand logs" -s n -l lines -d 'Print the last N lines first (0: none) [default: 20; with --since or --after-seq: every line they select]' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l since -d 'Only lines written in the last DUR (`90s`, `5m`, `1h 30m`)' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l after-seq -d 'Only lines after this sequence number: resumes exactly where an earlier reader stopped (the `seq` of `--output json`), reading the rotated files when needed' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l stream -d 'Only this stream (default: stdout, stderr and the daemon\'s lines)' -r -f -a "stdout\t'The script\'s stdout'
stderr\t'The script\'s stderr'
system\t'The daemon\'s lines about runs (started, ended, timed out)'"
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l run -d 'Only the lines of this run (the run id of `ctl run` or `ctl status`); with -f, end after its last line once it has ended' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l until-match -d 'End after the first stdout or stderr line matching REGEX (printed); exit 6 when the lines end first. The backlog counts: `-n 0` or `--run ID` to match only new lines' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l timeout -d 'With -f: give up after DUR (exit 6) unless the follow ended by itself before' -r
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand logs" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand logs" -s f -l follow -d 'Keep printing lines as they are written, across log rotation and restarts of the script, until interrupted (or the script is removed)'
complete -c ctl -n "__fish_ctl_using_subcommand logs" -l raw -d 'Print only the text of stdout and stderr lines, nothing added'
complete -c ctl -n "__fish_ctl_using_subcommand logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand completions" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand completions" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand completions" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand man" -l socket -d 'Daemon socket [default: daemon.socket of --config, else ./run/scriptd.sock]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand man" -l config -d 'Config file to read the socket path from [default: ./scriptd.yaml, else /etc/scriptd/scriptd.yaml]' -r -F
complete -c ctl -n "__fish_ctl_using_subcommand man" -s o -l output -d 'Output format' -r -f -a "table\t'Tables and lines for people'
json\t'One JSON document (streams: one object per line), each with `"schema": 1`'"
complete -c ctl -n "__fish_ctl_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "status" -d 'Daemon, running version, disk vs runtime, and a row per script'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "reload" -d 'Apply (or preview) what is on disk; prints the plan'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "events" -d 'Follow reload and lifecycle events'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "start" -d 'Start a stopped script (services) or resume its schedule (periodic). Several names, globs or --all: a row per script; --all skips disabled scripts'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "stop" -d 'Stop a script gracefully and keep it stopped (several: a row per script)'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "restart" -d 'Stop then start a script (several: a row per script; --all skips disabled ones)'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "run" -d 'Run a script once now, also when disabled or between intervals; prints the run id. A script that is already running is not run again (exit 1, naming its run)'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "history" -d 'Versions and refused attempts, newest first; `history show V` prints V\'s files; `history --actions` lists who started, stopped, restarted or ran which script'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "diff" -d 'Difference between two versions: unified diff of the files and the field-level plan'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "rollback" -d 'Go back to VERSION [default: the version before the running one], as a new version; the files on disk are rewritten to match'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "logs" -d 'A script\'s output: the last lines, then with -f live lines'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "completions" -d 'Print shell completions'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "man" -d 'Print the man page (roff)'
complete -c ctl -n "__fish_ctl_using_subcommand help; and not __fish_seen_subcommand_from status reload events start stop restart run history diff rollback logs completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ctl -n "__fish_ctl_using_subcommand help; and __fish_seen_subcommand_from history" -f -a "show" -d 'The files of one version'
