//! The `lightwhale` runtime script (`runtime/lightwhale-runc`) run against
//! a stand-in for runc that records its arguments: which calls pass
//! through unchanged and how `create` becomes `restore`. These tests need
//! neither root nor Docker. The end-to-end tests in `runc_checkpoints.rs`
//! run the script under a real Docker engine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result};

const ID: &str = "4f3c2b1a4f3c2b1a4f3c2b1a4f3c2b1a4f3c2b1a4f3c2b1a4f3c2b1a4f3c2b1a";

/// A temporary directory with a recording runc and a marker directory.
struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str, runc_status: u8) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("lightwhale-wrapper-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("markers"))?;
        let runc = dir.join("runc");
        // One argument per line, one call after another.
        fs::write(
            &runc,
            format!(
                "#!/bin/sh\nfor arg in \"$@\"; do printf '%s\\n' \"$arg\"; done >>'{}'\necho -- >>'{}'\nexit {runc_status}\n",
                dir.join("calls").display(),
                dir.join("calls").display()
            ),
        )?;
        fs::set_permissions(&runc, fs::Permissions::from_mode(0o755))?;
        fs::create_dir_all(dir.join("images"))?;
        Ok(Self { dir })
    }

    fn write_marker(&self, content: &str) -> Result<()> {
        Ok(fs::write(self.marker(), content)?)
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("markers").join(ID)
    }

    fn restored_file(&self) -> PathBuf {
        self.dir.join("markers").join(format!("{ID}.restored"))
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/lightwhale-runc");
        Command::new(&script)
            .args(args)
            .env("LIGHTWHALE_RUNC", self.dir.join("runc"))
            .env("LIGHTWHALE_RESTORE_DIR", self.dir.join("markers"))
            .output()
            .with_context(|| format!("cannot run {}", script.display()))
    }

    /// Returns the argument lists runc was called with.
    fn calls(&self) -> Result<Vec<Vec<String>>> {
        let text = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        Ok(text
            .split("--\n")
            .filter(|call| !call.is_empty())
            .map(|call| call.lines().map(str::to_owned).collect())
            .collect())
    }

    fn images(&self) -> String {
        self.dir.join("images").display().to_string()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

const GLOBAL: [&str; 6] = ["--root", "/run/docker/runtime-runc/moby", "--log", "/b/log.json", "--log-format", "json"];

fn create_args() -> Vec<&'static str> {
    let mut args = GLOBAL.to_vec();
    args.extend(["create", "--bundle", "/b", "--pid-file", "/b/init.pid", "--console-socket", "/tmp/pty.sock", "--no-pivot", ID]);
    args
}

#[test]
fn calls_without_marker_pass_through() -> Result<()> {
    let setup = Setup::new("pass", 0)?;
    let create = create_args();
    let mut delete = GLOBAL.to_vec();
    delete.extend(["delete", "--force", ID]);
    let mut start = GLOBAL.to_vec();
    start.extend(["start", ID]);
    for args in [&create, &delete, &start] {
        let output = setup.run(args)?;
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
    let calls = setup.calls()?;
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0], create);
    assert_eq!(calls[1], delete);
    assert_eq!(calls[2], start);
    Ok(())
}

#[test]
fn create_with_marker_restores() -> Result<()> {
    let setup = Setup::new("restore", 0)?;
    let work = setup.dir.join("work");
    setup.write_marker(&format!("image-path={}\nwork-path={}\ncriu=/opt/criu\n", setup.images(), work.display()))?;

    let output = setup.run(&create_args())?;
    assert!(output.status.success(), "{output:?}");
    assert!(!setup.marker().exists(), "the marker was not consumed");
    assert!(setup.restored_file().exists(), "no file to skip the start");
    assert!(work.is_dir(), "the work directory was not created");

    let mut start = GLOBAL.to_vec();
    start.extend(["start", ID]);
    let output = setup.run(&start)?;
    assert!(output.status.success(), "{output:?}");
    assert!(!setup.restored_file().exists(), "the start after a restore was not consumed");

    let calls = setup.calls()?;
    assert_eq!(calls.len(), 1, "the start reached runc: {calls:?}");
    let mut expected: Vec<String> = GLOBAL.iter().map(|arg| arg.to_string()).collect();
    expected.extend(
        [
            "--criu", "/opt/criu", "restore", "--detach", "--no-subreaper", "--image-path", &setup.images(),
            "--work-path", &work.display().to_string(), "--bundle", "/b", "--pid-file", "/b/init.pid",
            "--console-socket", "/tmp/pty.sock", "--no-pivot", ID,
        ]
        .map(str::to_owned),
    );
    assert_eq!(calls[0], expected);

    // The next start is an ordinary one.
    setup.run(&start)?;
    assert_eq!(setup.calls()?.len(), 2);
    Ok(())
}

#[test]
fn failed_restore_consumes_marker() -> Result<()> {
    let setup = Setup::new("failed", 1)?;
    let work = setup.dir.join("work");
    setup.write_marker(&format!("image-path={}\nwork-path={}\n", setup.images(), work.display()))?;

    let output = setup.run(&create_args())?;
    assert!(!output.status.success(), "a failed restore reported success");
    assert!(!setup.marker().exists(), "the marker was not consumed");
    assert!(!setup.restored_file().exists(), "a failed restore would skip the next start");
    let calls = setup.calls()?;
    assert!(calls[0].contains(&"restore".to_owned()), "{calls:?}");
    assert!(!calls[0].contains(&"--criu".to_owned()), "--criu without a criu in the marker: {calls:?}");

    // The next create is an ordinary one.
    setup.run(&create_args())?;
    let calls = setup.calls()?;
    assert_eq!(calls[1], create_args());
    Ok(())
}

#[test]
fn invalid_markers_are_rejected() -> Result<()> {
    let setup = Setup::new("invalid", 0)?;
    let images = setup.images();
    let cases = [
        ("work-path=/w\n".to_owned(), "no image-path"),
        (format!("image-path={images}\n"), "no work-path"),
        ("image-path=/nonexistent/images\nwork-path=/w\n".to_owned(), "does not exist"),
        (format!("image-path={images}\nwork-path=/w\nextra=1\n"), "unknown key"),
    ];
    for (marker, message) in cases {
        setup.write_marker(&marker)?;
        let output = setup.run(&create_args())?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{marker:?} was accepted");
        assert!(stderr.contains(message), "{marker:?}: {stderr}");
        assert!(!setup.marker().exists(), "{marker:?} was not consumed");
    }
    assert!(setup.calls()?.is_empty(), "runc was called");
    Ok(())
}

#[test]
fn unknown_create_option_fails_restore() -> Result<()> {
    let setup = Setup::new("option", 0)?;
    setup.write_marker(&format!("image-path={}\nwork-path=/w\n", setup.images()))?;
    let mut args = GLOBAL.to_vec();
    args.extend(["create", "--bundle", "/b", "--future-option", ID]);
    let output = setup.run(&args)?;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--future-option"), "{output:?}");
    assert!(setup.calls()?.is_empty());
    Ok(())
}
