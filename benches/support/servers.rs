//! The PostgreSQL server and the Pulsar broker of the chaos program and the distributed
//! benchmark: taken from the environment, or started (and stopped at the end) with the repo's
//! scripts. Crashes go through the scripts too (`kill` / `restart`, data kept).

use std::path::{Path, PathBuf};
use std::process::Command;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs a repo script; its stdout, or a panic with its stderr.
fn run(name: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new("bash");
    command.arg(script(name)).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(
        output.status.success(),
        "scripts/{name} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `export KEY=VALUE` lines of an env file written by a script.
fn env_value(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let prefix = format!("export {key}=");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

/// A PostgreSQL server.
pub struct Postgres {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Its directory (`INFINITIC_PG_DIR`): needed to kill and restart it and find its pids.
    pub dir: Option<PathBuf>,
    started_here: bool,
}

impl Postgres {
    /// `INFINITIC_PG_URL` (and `INFINITIC_PG_DIR`) if set, else a new server with fsync on.
    pub fn from_env_or_start() -> Self {
        if let Ok(url) = std::env::var("INFINITIC_PG_URL") {
            if !url.is_empty() {
                let dir = std::env::var_os("INFINITIC_PG_DIR").map(PathBuf::from);
                return Self {
                    url,
                    dir,
                    started_here: false,
                };
            }
        }
        run("postgres.sh", &["install"], &[]);
        let env_file = run("postgres.sh", &["start", "--fsync", "on"], &[]);
        Self {
            url: env_value(&env_file, "INFINITIC_PG_URL").expect("the env file has the URL"),
            dir: env_value(&env_file, "INFINITIC_PG_DIR").map(PathBuf::from),
            started_here: true,
        }
    }

    /// `SHOW fsync`.
    pub fn fsync(&self) -> String {
        psql(&self.url, "SHOW fsync")
    }

    fn dir(&self) -> &str {
        self.dir
            .as_deref()
            .and_then(Path::to_str)
            .expect("INFINITIC_PG_DIR: the server's directory, to kill and restart it")
    }

    /// SIGKILLs the postmaster (data kept).
    pub fn kill(&self) {
        run("postgres.sh", &["kill", self.dir()], &[]);
    }

    /// Starts it again on its data (crash recovery), same port.
    pub fn restart(&self) {
        run("postgres.sh", &["restart", self.dir()], &[]);
    }

    /// The postmaster's pid, when it runs and its directory is known.
    pub fn pid(&self) -> Option<u32> {
        let dir = self.dir.as_ref()?;
        std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new("bash")
                .arg(script("postgres.sh"))
                .args(["stop", self.dir()])
                .output();
        }
    }
}

/// Runs `sql` with psql; its output (unaligned, tuples only).
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs (installed with the server)");
    assert!(
        output.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A Pulsar broker.
pub struct Broker {
    /// `pulsar://host:port`.
    pub url: String,
    /// Its run root (`INFINITIC_PULSAR_RUN`), when known: to kill, restart and find its pid.
    run: Option<PathBuf>,
    started_here: bool,
}

impl Broker {
    /// `INFINITIC_PULSAR_URL` if set (its pid found under `INFINITIC_PULSAR_RUN` if that is
    /// set too), else a broker of our own.
    pub fn from_env_or_start(own_run: &Path) -> Self {
        let run = std::env::var_os("INFINITIC_PULSAR_RUN").map(PathBuf::from);
        match std::env::var("INFINITIC_PULSAR_URL") {
            Ok(url) if !url.is_empty() => Self {
                url,
                run,
                started_here: false,
            },
            _ => Self::start(own_run),
        }
    }

    /// A broker of our own, in the run root `run` (which nobody else uses).
    pub fn start(run: &Path) -> Self {
        let env = [("INFINITIC_PULSAR_RUN", run)];
        let env_file = self::run("pulsar.sh", &["start"], &env);
        Self {
            url: env_value(&env_file, "INFINITIC_PULSAR_URL").expect("the env file has the URL"),
            run: Some(run.to_path_buf()),
            started_here: true,
        }
    }

    fn run_root(&self) -> &Path {
        self.run
            .as_deref()
            .expect("the broker's run dir (INFINITIC_PULSAR_RUN), to kill and restart it")
    }

    /// SIGKILLs the broker (data kept).
    pub fn kill(&self) {
        run(
            "pulsar.sh",
            &["kill"],
            &[("INFINITIC_PULSAR_RUN", self.run_root())],
        );
    }

    /// Starts it again on its data and ports; returns when it is ready.
    pub fn restart(&self) {
        Self::restart_at(self.run_root());
    }

    /// Starts the broker of run root `run` again (callable from a blocking task).
    pub fn restart_at(run: &Path) {
        self::run("pulsar.sh", &["restart"], &[("INFINITIC_PULSAR_RUN", run)]);
    }

    /// The broker JVM's pid, when known.
    pub fn pid(&self) -> Option<u32> {
        let run = self.run.as_ref()?;
        std::fs::read_to_string(run.join("plain/pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new("bash")
                .arg(script("pulsar.sh"))
                .arg("stop")
                .env("INFINITIC_PULSAR_RUN", self.run_root())
                .output();
            // The script removes the broker's dir; its (now empty) run root is ours too.
            let _ = std::fs::remove_dir(self.run_root());
        }
    }
}
