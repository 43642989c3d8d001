//! A lightwhale daemon started for one test.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::command::run;
use crate::wait::wait_until;
use crate::STATE_TIMEOUT;

/// Upper bound for `status` to succeed after the daemon started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for the daemon to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Number of log lines shown when a daemon guard is dropped.
const LOG_TAIL_LINES: usize = 200;

static NEXT_DAEMON: AtomicU32 = AtomicU32::new(0);

/// A running `lightwhale run` process, stopped on drop.
///
/// The daemon listens on a control socket in a directory of its own, so
/// tests do not touch the default socket path. Its standard output and
/// error go to a log file in that directory. On drop, the guard prints the
/// end of that log, which the test runner shows only for failed tests.
pub struct Daemon {
    binary: PathBuf,
    /// The daemon process, `None` once it was stopped. The mutex lets
    /// `&self` methods check whether it exited, which needs `&mut Child`.
    child: Mutex<Option<Child>>,
    work_dir: PathBuf,
    socket: PathBuf,
    log_path: PathBuf,
    /// Arguments after `run`, kept for [`Daemon::restart`].
    args: Vec<String>,
}

impl Daemon {
    /// Starts `$LIGHTWHALE_BIN run <args>` and waits until
    /// `status --json` succeeds.
    pub fn start(args: &[&str]) -> Result<Daemon> {
        require_root()?;
        crate::host_lock::hold()?;
        let binary = daemon_binary()?;

        let work_dir = std::env::temp_dir().join(format!(
            "lightwhale-test-{}-{}",
            std::process::id(),
            NEXT_DAEMON.fetch_add(1, Ordering::Relaxed)
        ));
        if work_dir.exists() {
            fs::remove_dir_all(&work_dir)
                .with_context(|| format!("failed to remove {}", work_dir.display()))?;
        }
        fs::create_dir_all(&work_dir)
            .with_context(|| format!("failed to create {}", work_dir.display()))?;
        let socket = work_dir.join("lightwhale.sock");
        let log_path = work_dir.join("daemon.log");
        File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;

        let daemon = Daemon {
            binary,
            child: Mutex::new(None),
            work_dir,
            socket,
            log_path,
            args: args.iter().map(|arg| arg.to_string()).collect(),
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Starts the daemon process, appending to the log, with a state
    /// directory of its own that survives restarts, and waits until it is
    /// ready.
    fn spawn(&self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("failed to open {}", self.log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .args(&self.args)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(self.state_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The log is a file, so colour escape codes would only clutter it.
        command.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,lightwhale=debug");
        }
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {}", self.binary.display()))?;
        println!(
            "started lightwhale (pid {}) with args {:?}, log {}",
            child.id(),
            self.args,
            self.log_path.display()
        );
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        self.wait_until_ready()
    }

    /// Returns the daemon's state directory, which survives restarts.
    pub fn state_dir(&self) -> PathBuf {
        self.work_dir.join("state")
    }

    /// Kills the daemon with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.take_child()?;
        child.kill()?;
        let status = child.wait()?;
        println!("lightwhale (pid {}) killed: {status}", child.id());
        Ok(())
    }

    /// Kills the daemon with SIGKILL in the middle of a CLI request, as a
    /// crash would. Sends `request` (`sleep` or `wake`) for container
    /// `name` in the background, and kills the daemon once the container
    /// reached `state` and `delay` passed. The request then fails, so its
    /// outcome is not checked.
    pub fn kill_during_request(&mut self, request: &str, name: &str, state: &str, delay: Duration) -> Result<()> {
        let mut client = self
            .cli_command(&[request, name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to start `lightwhale {request} {name}`"))?;
        self.wait_for_state(name, state, STATE_TIMEOUT)?;
        thread::sleep(delay);
        self.kill()?;
        client.wait()?;
        Ok(())
    }

    /// Starts the daemon again after [`Daemon::kill`] or [`Daemon::stop`],
    /// with the same arguments, socket and state directory.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.get_mut().unwrap_or_else(PoisonError::into_inner).is_some() {
            bail!("the daemon still runs");
        }
        self.spawn()
    }

    /// Returns the daemon's process id, or 0 once it was stopped.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().map_or(0, Child::id)
    }

    /// Runs a CLI subcommand (`status`, `sleep`, `wake`) against this
    /// daemon's socket and returns its standard output.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        run(&mut self.cli_command(args))
    }

    /// Returns the command line of a CLI subcommand against this daemon's
    /// socket, for tests that run it in the background.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args).arg("--socket").arg(&self.socket);
        command
    }

    /// Returns the parsed output of `lightwhale status --json`.
    pub fn status(&self) -> Result<Value> {
        let output = self.cli(&["status", "--json"])?;
        serde_json::from_str(&output)
            .with_context(|| format!("`lightwhale status --json` printed invalid JSON: {output}"))
    }

    /// Returns the status entry of the container whose name or full id is
    /// `name`, or `None` when the daemon does not list it.
    pub fn container_status(&self, name: &str) -> Result<Option<Value>> {
        let status = self.status()?;
        let containers = status["containers"]
            .as_array()
            .ok_or_else(|| anyhow!("status has no `containers` array: {status}"))?;
        Ok(containers
            .iter()
            .find(|entry| {
                let entry_name = entry["name"].as_str().unwrap_or("");
                entry_name.trim_start_matches('/') == name || entry["id"] == name
            })
            .cloned())
    }

    /// Waits until the container's `state` is `state` and returns its
    /// status entry.
    pub fn wait_for_state(&self, name: &str, state: &str, timeout: Duration) -> Result<Value> {
        self.wait_for_status(name, &format!("state {state:?}"), timeout, |entry| {
            entry["state"] == state
        })
    }

    /// Waits until the container's `state` is one of `states` and returns its
    /// status entry.
    pub fn wait_for_any_state(&self, name: &str, states: &[&str], timeout: Duration) -> Result<Value> {
        self.wait_for_status(name, &states.join(" or "), timeout, |entry| {
            states.iter().any(|state| entry["state"] == *state)
        })
    }

    /// Waits until the container's status entry satisfies `condition`,
    /// described by `description` in the timeout error, and returns the entry.
    pub fn wait_for_status(
        &self,
        name: &str,
        description: &str,
        timeout: Duration,
        condition: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut last_entry = None;
        let result = wait_until(&format!("{name} to reach {description}"), timeout, || {
            self.check_alive()?;
            let entry = self.container_status(name)?;
            last_entry = entry.clone();
            Ok(entry.filter(|entry| condition(entry)))
        });
        result.with_context(|| match &last_entry {
            Some(entry) => format!("last status of {name}: {entry}"),
            None => format!("the daemon never listed {name}"),
        })
    }

    /// Sends SIGTERM, waits for the daemon to exit and returns its exit
    /// status. It is killed with SIGKILL, and an error returned, when it
    /// has not exited within [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self.take_child()?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions. The child is not
        // reaped yet, so its PID cannot belong to another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };

        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Some(status) = child.try_wait()? {
                println!(
                    "lightwhale (pid {pid}) exited with {status} {:?} after SIGTERM",
                    started.elapsed()
                );
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(100));
        }

        child.kill()?;
        let status = child.wait()?;
        bail!("lightwhale (pid {pid}) did not exit within {STOP_TIMEOUT:?} after SIGTERM, so it was killed ({status})")
    }

    /// Returns the daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Returns an error with the end of the log when the daemon has exited.
    fn check_alive(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap();
        let Some(child) = child.as_mut() else {
            bail!("the daemon was stopped");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "lightwhale exited unexpectedly ({status}); end of its log:\n{}",
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        Ok(())
    }

    /// Takes the daemon process out of the guard, which then counts it as
    /// stopped, or returns an error when it was already stopped.
    fn take_child(&mut self) -> Result<Child> {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        child.ok_or_else(|| anyhow!("the daemon was already stopped"))
    }

    fn wait_until_ready(&self) -> Result<()> {
        let started = Instant::now();
        let mut last_error = None;
        while started.elapsed() < READY_TIMEOUT {
            self.check_alive()?;
            match self.status() {
                Ok(_) => {
                    println!("lightwhale ready after {:?}", started.elapsed());
                    return Ok(());
                }
                Err(err) => last_error = Some(err),
            }
            thread::sleep(Duration::from_millis(100));
        }
        let error = last_error.unwrap_or_else(|| anyhow!("no status request was made"));
        Err(error.context(format!(
            "lightwhale did not respond to `status` within {READY_TIMEOUT:?}; end of its log:\n{}",
            tail(&self.log(), LOG_TAIL_LINES)
        )))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self
            .child
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
        {
            if let Err(err) = self.stop() {
                eprintln!("{err:#}");
            }
        }
        // Test output is captured, so this shows only for failed tests.
        eprintln!(
            "---- end of lightwhale log {} ----\n{}",
            self.log_path.display(),
            tail(&self.log(), LOG_TAIL_LINES)
        );
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// Returns the daemon binary named by `LIGHTWHALE_BIN`.
pub fn daemon_binary() -> Result<PathBuf> {
    let Some(binary) = std::env::var_os("LIGHTWHALE_BIN") else {
        bail!(
            "LIGHTWHALE_BIN is not set; set it to the absolute path of the built lightwhale \
             binary, or run the end-to-end tests through the xtask, which sets it"
        );
    };
    let binary = PathBuf::from(binary);
    if !binary.is_absolute() || !Path::new(&binary).is_file() {
        bail!(
            "LIGHTWHALE_BIN={} is not an absolute path to a file",
            binary.display()
        );
    }
    Ok(binary)
}

/// Returns an error unless the test runs as root, which the daemon needs to
/// load eBPF programs and checkpoint containers.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("the end-to-end tests must run as root (effective uid is {euid})");
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
