//! Running external commands with errors that name the command.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `command` and returns its standard output, or an error naming the
/// command, its exit status and its standard error.
pub fn run(command: &mut Command) -> Result<String> {
    let output = output(command)?;
    check(command, &output)
}

/// Runs `command` with `input` on its standard input, like [`run`].
pub fn run_with_input(command: &mut Command, input: &[u8]) -> Result<String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start `{}`", describe(command)))?;

    // Write from a separate thread so that a command that writes much output
    // before it reads all of its input cannot deadlock against us.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));

    let output = child
        .wait_with_output()
        .with_context(|| format!("failed to wait for `{}`", describe(command)))?;
    writer
        .join()
        .expect("stdin writer thread panicked")
        .with_context(|| format!("failed to write the input of `{}`", describe(command)))?;
    check(command, &output)
}

/// Runs `command` and returns its output whatever its exit status, for
/// commands that are expected to fail.
pub fn output(command: &mut Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to start `{}`", describe(command)))
}

/// Formats `command` as a shell-like line for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(command: &Command, output: &Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
