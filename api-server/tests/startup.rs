//! The binary refuses to start, with one clear line, when it cannot do its job: the database
//! is unreachable (its password never printed) or no admin token is configured. Runs the
//! built `millrace-api`; needs no platform.

use std::process::{Command, Output};
use std::time::Duration;

fn run(envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_millrace-api"));
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).args([
        "--database-timeout-seconds",
        "2",
        "--listen-addr",
        "127.0.0.1:0",
    ]);
    for (key, value) in envs {
        command.env(key, value);
    }
    let child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn();
    let child = child.expect("millrace-api starts");
    let started = std::time::Instant::now();
    let output = child.wait_with_output().expect("millrace-api exits");
    assert!(started.elapsed() < Duration::from_secs(20), "refusing took {:?}", started.elapsed());
    output
}

#[test]
fn an_unreachable_database_stops_the_start() {
    let output = run(&[
        ("DATABASE_URL", "postgres://millrace:hunter2@127.0.0.1:1/millrace"),
        ("MILLRACE_ADMIN_TOKEN", "a-long-enough-admin-token"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot reach the catalog database at postgres://millrace:***@127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_missing_admin_token_stops_the_start() {
    let output = run(&[("DATABASE_URL", "postgres://millrace:x@127.0.0.1:1/millrace")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no admin token: set MILLRACE_ADMIN_TOKEN or --admin-token-file"), "{stderr}");
    let output = run(&[("DATABASE_URL", "postgres://x@127.0.0.1:1/x"), ("MILLRACE_ADMIN_TOKEN", "short")]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("shorter than 16 characters"));
}
