//! A broker of a test's own, started by `scripts/pulsar.sh` in `$INFINITIC_PULSAR_RUN/NAME`,
//! so a test can SIGKILL and restart it without disturbing the broker other tests share.

use std::path::PathBuf;
use std::process::Command as Process;

/// A broker started by `scripts/pulsar.sh` in a run dir of its own; stopped (data removed)
/// when dropped, panics included.
pub struct Broker {
    run: PathBuf,
    /// The broker's `pulsar://` URL.
    pub url: String,
}

impl Broker {
    /// A broker in `$INFINITIC_PULSAR_RUN/{name}`; `None` (skipped) without
    /// `INFINITIC_PULSAR_RUN`, except under `CI=true`.
    pub fn start(name: &str) -> Option<Self> {
        let root = match std::env::var("INFINITIC_PULSAR_RUN") {
            Ok(root) if !root.is_empty() => PathBuf::from(root),
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => panic!(
                "INFINITIC_PULSAR_RUN is not set under CI=true: run scripts/test-pulsar.sh, or \
                 set it to a scratch dir (the test starts its own broker there)"
            ),
            _ => {
                eprintln!(
                    "skipped: INFINITIC_PULSAR_RUN is not set (run scripts/test-pulsar.sh, or \
                     set it to a scratch dir: the test starts its own broker there)"
                );
                return None;
            }
        };
        let mut broker = Self {
            run: root.join(name),
            url: String::new(),
        };
        // A broker left over by an interrupted run is replaced.
        broker.script("stop");
        let env_file = broker.script("start");
        let env = std::fs::read_to_string(env_file.trim())
            .unwrap_or_else(|e| panic!("cannot read the broker's env file {env_file}: {e}"));
        broker.url = env
            .lines()
            .find_map(|line| line.strip_prefix("export INFINITIC_PULSAR_URL="))
            .expect("the env file names the broker's URL")
            .to_string();
        Some(broker)
    }

    /// Runs `scripts/pulsar.sh <command>` on this broker's run dir; its stdout.
    pub fn script(&self, command: &str) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pulsar.sh");
        let output = Process::new("bash")
            .arg(&script)
            .arg(command)
            .env("INFINITIC_PULSAR_RUN", &self.run)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "`pulsar.sh {command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.script("stop");
    }
}
