# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_urbdadm_global_optspecs
    string join \n c/config= d/dry-run node= v/verbose h/help V/version
end

function __fish_urbdadm_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_urbdadm_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_urbdadm_using_subcommand
    set -l cmd (__fish_urbdadm_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c urbdadm -n "__fish_urbdadm_needs_command" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_needs_command" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_needs_command" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -s V -l version -d 'Print version'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "create-md" -d 'Initialise the metadata (v08 format) on the meta-disk'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "up" -d 'Start the node daemon: attach the disks and connect to the peer'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "down" -d 'Flush, disconnect, detach and stop the node daemon'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "attach" -d 'Attach the local backing disk to a running resource'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "detach" -d 'Detach the local backing disk (the resource goes Diskless)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "connect" -d 'Connect to the peer'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "disconnect" -d 'Disconnect from the peer (StandAlone)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "primary" -d 'Promote to Primary'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "secondary" -d 'Demote to Secondary'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "role" -d 'Print the local and peer role (e.g. Primary/Secondary)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "cstate" -d 'Print the connection state (e.g. Connected)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "dstate" -d 'Print the local and peer disk state (e.g. UpToDate/UpToDate)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "status" -d 'Print the state of resources (DRBD 9 style, or JSON)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "dump" -d 'Print the normalized configuration, like `drbdadm dump`'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "dump-md" -d 'Print the metadata in drbdmeta\'s dump-md text form'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "show-gi" -d 'Print the generation identifiers with their meaning'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "get-gi" -d 'Print the generation identifiers in one line'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "apply-al" -d 'Apply the activity log to the bitmap (after a crash of a Primary)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "invalidate" -d 'Discard the local data and resync it from the peer'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "invalidate-remote" -d 'Discard the peer\'s data and resync it from this node'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "verify" -d 'Start an online verify of both replicas'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "pause-sync" -d 'Pause a running resync'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "resume-sync" -d 'Resume a paused resync'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "outdate" -d 'Mark the local disk Outdated (offline, in the metadata, when the resource is down)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "resume-io" -d 'Resume I/O frozen by fencing (resource-and-stonith) without waiting for the fence-peer handler'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "inject-fault" -d 'Make the data disk fail from now on (a testing aid: the daemon must run with URBD_FAULT_INJECTION=1). No option heals it'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "wait-connect" -d 'Wait until the resource is connected'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "adjust" -d 'Bring a running resource in line with the configuration file'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "proc" -d 'Print the state of all resources in /proc/drbd\'s format'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "events" -d 'Stream state changes, as `drbdsetup events2` prints them'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "split-brain-saves" -d 'List the split-brain saves: what a split-brain victim saved of its own changes before the resync overwrote them (in /var/lib/urbd/RES, or $URBD_STATE_DIR/RES)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "restore-split-brain-save" -d 'Write a split-brain save back, each block at its offset, onto a device or file (created if missing). The whole file is checked first: a damaged one writes nothing'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "demo" -d 'Run the two-node demo on loopback with file-backed disks in a temporary folder'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "install-ocf" -d 'Install the Pacemaker resource agents ocf:urbd:urbd (the stand-in for ocf:linbit:drbd) and ocf:urbd:nbdfuse-loop (a /dev/nbd0 stand-in without kernel nbd)'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "generate" -d 'Write generated files: shell completions, man pages, the systemd unit'
complete -c urbdadm -n "__fish_urbdadm_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -l force -d 'Overwrite existing metadata or a filesystem signature without asking'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand create-md" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand up" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand up" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand up" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand up" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand up" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand down" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand down" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand down" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand down" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand down" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand attach" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand attach" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand attach" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand attach" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand attach" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand detach" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand detach" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand detach" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand detach" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand detach" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -l discard-my-data -d 'Mark the local data as the split-brain victim (discarded in favour of the peer\'s)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand connect" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand disconnect" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand disconnect" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand disconnect" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand disconnect" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand disconnect" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -l force -d 'Promote even an Inconsistent or Outdated disk (makes it UpToDate)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand primary" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand secondary" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand secondary" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand secondary" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand secondary" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand secondary" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand role" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand role" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand role" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand role" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand role" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand cstate" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand cstate" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand cstate" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand cstate" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand cstate" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dstate" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dstate" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dstate" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dstate" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dstate" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -l json -d 'Machine-readable output'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand status" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump-md" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump-md" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump-md" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump-md" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand dump-md" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand show-gi" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand show-gi" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand show-gi" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand show-gi" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand show-gi" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand get-gi" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand get-gi" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand get-gi" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand get-gi" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand get-gi" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand apply-al" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand apply-al" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand apply-al" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand apply-al" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand apply-al" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate-remote" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate-remote" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate-remote" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate-remote" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand invalidate-remote" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand verify" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand verify" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand verify" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand verify" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand verify" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand pause-sync" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand pause-sync" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand pause-sync" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand pause-sync" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand pause-sync" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-sync" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-sync" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-sync" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-sync" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-sync" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand outdate" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand outdate" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand outdate" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand outdate" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand outdate" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-io" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-io" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-io" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-io" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand resume-io" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -l read-error -d 'Reads touching these sectors fail with EIO' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -l write-error -d 'Writes touching these sectors fail with EIO' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -l flush-error -d 'Flushes fail with EIO'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -l dead -d 'Every operation fails with EIO (the disk is gone)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand inject-fault" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand wait-connect" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand wait-connect" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand wait-connect" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand wait-connect" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand wait-connect" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand adjust" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand adjust" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand adjust" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand adjust" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand adjust" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -l json -d 'Machine-readable output (the same fields, as `status --json` gives them)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand proc" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -l now -d 'Print the current state (`exists` lines, then `exists -`) and exit'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand events" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -l json -d 'Machine-readable output'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand split-brain-saves" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -l to -d 'The device or file to write the blocks onto' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -l force -d 'Write even onto the disk or device of a resource that is up'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand restore-split-brain-save" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -l size -d 'Size of each node\'s data disk (with k/M/G suffix)' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -l keep -d 'Keep the demo\'s folder (and print where it is) instead of removing it'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand demo" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -l dir -d 'The OCF provider directory to install `urbd` into' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand install-ocf" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -f -a "completions" -d 'A shell\'s completion script for urbdadm, on stdout or into DIR'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -f -a "man" -d 'The man pages (section 8): urbdadm, one per urbdadm command, urbd'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -f -a "systemd" -d 'The systemd unit `urbd@.service`, pointing at these binaries'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and not __fish_seen_subcommand_from completions man systemd help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -l dir -d 'Write `urbdadm.bash` / `_urbdadm` / `urbdadm.fish` into this folder' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from man" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from man" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from man" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from man" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -l bin-dir -d 'Where urbd and urbdadm are (default: the folder of this urbdadm)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s c -l config -d 'Configuration file (default: /etc/urbd.conf, then /etc/drbd.conf)' -r -F
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -l node -d 'Act as this node (the `on NAME` section); default: the host name' -r
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s d -l dry-run -d 'Print the steps a command would take; change nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s v -l verbose -d 'More log output (repeat for more)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s h -l help -d 'Print help'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'A shell\'s completion script for urbdadm, on stdout or into DIR'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'The man pages (section 8): urbdadm, one per urbdadm command, urbd'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "systemd" -d 'The systemd unit `urbd@.service`, pointing at these binaries'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "create-md" -d 'Initialise the metadata (v08 format) on the meta-disk'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "up" -d 'Start the node daemon: attach the disks and connect to the peer'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "down" -d 'Flush, disconnect, detach and stop the node daemon'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "attach" -d 'Attach the local backing disk to a running resource'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "detach" -d 'Detach the local backing disk (the resource goes Diskless)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "connect" -d 'Connect to the peer'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "disconnect" -d 'Disconnect from the peer (StandAlone)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "primary" -d 'Promote to Primary'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "secondary" -d 'Demote to Secondary'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "role" -d 'Print the local and peer role (e.g. Primary/Secondary)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "cstate" -d 'Print the connection state (e.g. Connected)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "dstate" -d 'Print the local and peer disk state (e.g. UpToDate/UpToDate)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "status" -d 'Print the state of resources (DRBD 9 style, or JSON)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "dump" -d 'Print the normalized configuration, like `drbdadm dump`'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "dump-md" -d 'Print the metadata in drbdmeta\'s dump-md text form'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "show-gi" -d 'Print the generation identifiers with their meaning'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "get-gi" -d 'Print the generation identifiers in one line'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "apply-al" -d 'Apply the activity log to the bitmap (after a crash of a Primary)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "invalidate" -d 'Discard the local data and resync it from the peer'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "invalidate-remote" -d 'Discard the peer\'s data and resync it from this node'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "verify" -d 'Start an online verify of both replicas'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "pause-sync" -d 'Pause a running resync'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "resume-sync" -d 'Resume a paused resync'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "outdate" -d 'Mark the local disk Outdated (offline, in the metadata, when the resource is down)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "resume-io" -d 'Resume I/O frozen by fencing (resource-and-stonith) without waiting for the fence-peer handler'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "inject-fault" -d 'Make the data disk fail from now on (a testing aid: the daemon must run with URBD_FAULT_INJECTION=1). No option heals it'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "wait-connect" -d 'Wait until the resource is connected'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "adjust" -d 'Bring a running resource in line with the configuration file'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "proc" -d 'Print the state of all resources in /proc/drbd\'s format'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "events" -d 'Stream state changes, as `drbdsetup events2` prints them'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "split-brain-saves" -d 'List the split-brain saves: what a split-brain victim saved of its own changes before the resync overwrote them (in /var/lib/urbd/RES, or $URBD_STATE_DIR/RES)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "restore-split-brain-save" -d 'Write a split-brain save back, each block at its offset, onto a device or file (created if missing). The whole file is checked first: a damaged one writes nothing'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "demo" -d 'Run the two-node demo on loopback with file-backed disks in a temporary folder'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "install-ocf" -d 'Install the Pacemaker resource agents ocf:urbd:urbd (the stand-in for ocf:linbit:drbd) and ocf:urbd:nbdfuse-loop (a /dev/nbd0 stand-in without kernel nbd)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "generate" -d 'Write generated files: shell completions, man pages, the systemd unit'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and not __fish_seen_subcommand_from create-md up down attach detach connect disconnect primary secondary role cstate dstate status dump dump-md show-gi get-gi apply-al invalidate invalidate-remote verify pause-sync resume-sync outdate resume-io inject-fault wait-connect adjust proc events split-brain-saves restore-split-brain-save demo install-ocf generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'A shell\'s completion script for urbdadm, on stdout or into DIR'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'The man pages (section 8): urbdadm, one per urbdadm command, urbd'
complete -c urbdadm -n "__fish_urbdadm_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "systemd" -d 'The systemd unit `urbd@.service`, pointing at these binaries'
