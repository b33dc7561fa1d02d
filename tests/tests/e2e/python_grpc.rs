//! Standard gRPC clients work over the Unix socket: Python's `grpcio` with default options
//! (which, from 1.57 on, sends the socket path as the HTTP/2 `:authority`; the server used to
//! reset every such call with `PROTOCOL_ERROR`) and with nothing but server reflection
//! (v1alpha, what its reflection client asks for; no `.proto` file): health, a unary call
//! (`Status`) and a streaming one (`Logs`).
//!
//! The client is `tests/python/reflect_client.py`, run in a venv made from
//! `tests/python/requirements.txt` under the target directory (kept between runs; rebuilt
//! when the requirements change). Without `python3 -m venv` or PyPI the test fails, saying
//! what is missing.

use scriptd_e2e::{unique_marker, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `cmd`, panicking with its output and `hint` when it fails.
fn must(cmd: &mut Command, hint: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): {hint}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {hint}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The venv's python, made (or remade) when its requirements differ from the repository's.
fn venv_python() -> PathBuf {
    let requirements = std::fs::read_to_string(python_dir().join("requirements.txt"))
        .expect("tests/python/requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-grpc-venv");
    let stamp = venv.join("requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return python;
    }
    let _ = std::fs::remove_dir_all(&venv);
    must(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "needs python3 with venv (Debian: apt-get install python3-venv)",
    );
    must(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(python_dir().join("requirements.txt")),
        "needs access to PyPI to install grpcio, grpcio-reflection and protobuf",
    );
    std::fs::write(&stamp, requirements).expect("write the venv stamp");
    python
}

#[test]
fn python_grpcio_with_default_options_and_reflection_only() {
    let python = venv_python();
    let marker = unique_marker("python-grpc");
    let env = Env::with_scripts(&[("hello", &format!("echo {marker}"), "    interval: 1h\n")]);
    let d = env.start();
    d.wait_script("hello", "the first run to end", |s| s.last_exit.is_some());

    let out = must(
        Command::new(&python)
            .arg(python_dir().join("reflect_client.py"))
            .arg(env.socket())
            .arg("hello"),
        "the Python gRPC client failed against the daemon",
    );
    let got: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let strings = |key: &str| -> Vec<String> {
        got[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {got}"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    };

    // A grpcio that sends the path as :authority, or this test proves nothing.
    let version = got["grpc_version"].as_str().expect("grpc_version");
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("grpcio version");
    assert!(minor >= 57, "grpcio {version} is too old to test this");
    let services = strings("services");
    // What the v1alpha reflection service lists (the v1 one lists itself instead of it).
    for service in [
        "scriptd.v1.Scriptd",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.iter().any(|s| s == service), "{service}: {got}");
    }
    assert_eq!(got["health"]["status"], "SERVING", "{got}");
    assert_eq!(got["running_version"], 1, "{got}");
    assert_eq!(strings("scripts"), ["hello"]);
    assert!(strings("lines").contains(&marker), "{got}");
}
