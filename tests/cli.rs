//! The `urbdadm` command tree, exercised through the real binary.

mod util;

use util::adm;

const ALL_COMMANDS: &[&str] = &[
    "create-md",
    "up",
    "down",
    "attach",
    "detach",
    "connect",
    "disconnect",
    "primary",
    "secondary",
    "role",
    "cstate",
    "dstate",
    "status",
    "dump",
    "dump-md",
    "show-gi",
    "get-gi",
    "apply-al",
    "invalidate",
    "invalidate-remote",
    "verify",
    "pause-sync",
    "resume-sync",
    "outdate",
    "wait-connect",
    "adjust",
    "proc",
    "events",
    "demo",
];

#[test]
fn help_lists_every_drbdadm_command() {
    let out = adm(&["--help"]).ok();
    for c in ALL_COMMANDS {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{c} "))),
            "`{c}` missing from --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn unknown_command_is_a_syntax_error() {
    let out = adm(&["frobnicate", "r0"]).code(2);
    assert!(out.stderr.contains("frobnicate"), "{}", out.stderr);
}

#[test]
fn commands_not_served_yet_say_so_and_fail() {
    let c = "adjust";
    let out = adm(&[c, "optzimbra"]).code(20);
    assert!(
        out.stderr
            .contains(&format!("`urbdadm {c} optzimbra` is not available yet")),
        "{c}: {}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was done"), "{}", out.stderr);
    assert!(
        out.stdout.is_empty(),
        "{c} printed to stdout: {}",
        out.stdout
    );
    // Not even a dry run pretends.
    adm(&["-d", "adjust", "optzimbra"]).code(20);
}

#[test]
fn discard_my_data_before_and_after_the_command() {
    // The seed's form: options for the connect command after `--`, before the command.
    let conf = util::examples_dir().join("optzimbra.res");
    let conf = conf.to_string_lossy();
    for argv in [
        &["--", "--discard-my-data", "connect", "optzimbra"][..],
        &["--discard-my-data", "connect", "optzimbra"][..],
        &["connect", "--discard-my-data", "optzimbra"][..],
    ] {
        let mut args = vec!["-c", &conf, "--node", "braavos", "-d"];
        args.extend_from_slice(argv);
        let out = adm(&args).ok();
        assert!(
            out.stdout
                .starts_with("connect --discard-my-data optzimbra:"),
            "{argv:?}: {}",
            out.stdout
        );
    }
    let plain = adm(&[
        "-c",
        &conf,
        "--node",
        "braavos",
        "-d",
        "connect",
        "optzimbra",
    ])
    .ok();
    assert!(
        plain.stdout.starts_with("connect optzimbra:"),
        "{}",
        plain.stdout
    );
    // An option that connect does not have is refused, not ignored.
    adm(&["--", "--bogus", "connect", "optzimbra"]).code(2);
}

#[test]
fn primary_force_is_parsed() {
    // `primary` is served now: its dry run shows the parsed request.
    let conf = util::examples_dir().join("optzimbra.res");
    let conf = conf.to_string_lossy();
    let out = adm(&[
        "-c",
        &conf,
        "--node",
        "astapor",
        "-d",
        "--",
        "--force",
        "primary",
        "optzimbra",
    ])
    .ok();
    assert!(
        out.stdout.starts_with("primary --force optzimbra/0"),
        "{}",
        out.stdout
    );
}

#[test]
fn resource_argument_is_required() {
    adm(&["up"]).code(2);
}

#[test]
fn demo_replicates_two_nodes_for_real() {
    let out = adm(&["demo", "--size", "16M"]).ok();
    for expected in [
        "[alpha] urbdadm up demo",
        "[beta] urbdadm up demo",
        "[alpha] urbdadm -- --force primary demo",
        "[alpha] initial sync to beta",
        "[alpha] writing 16 MiB through NBD",
        ": identical",
        "both replicas identical: ",
        " 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----",
        " 1: cs:Connected ro:Secondary/Primary ds:UpToDate/UpToDate C r-----",
        "[alpha] urbdadm down demo",
        "[beta] urbdadm down demo",
        "To do the same by hand",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing {expected:?}:\n{}",
            out.stdout
        );
    }
    // The initial sync read and sent the whole device (16 MiB); the application wrote and
    // read back 16 MiB, replicated to beta, which wrote both.
    assert!(
        out.stdout.contains("ns:32768 nr:0 dw:16384 dr:32768 "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(" dw:32768 dr:0 "), "{}", out.stdout);
}
