//! Images for the end-to-end tests and the demo, and removal of what tests
//! leave behind.
//!
//! The test hosts reach no image registry, so every image is imported from a
//! root filesystem built on the machine: a static `http-counter` binary from
//! this workspace, and a Debian system with redis-server made by
//! debootstrap. Each image carries the label `lightwhale.test=1`, which
//! Docker copies to every container created from it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lightwhale_tests::command::{describe, run};

/// The HTTP workload with an in-memory hit counter (`tests/src/bin/http-counter.rs`).
pub const HTTP_COUNTER_IMAGE: &str = "lightwhale-test/http-counter:latest";

/// redis-server from Debian, with persistence off.
pub const REDIS_IMAGE: &str = "lightwhale-test/redis:latest";

/// Label on every image, container and network that tests create.
const TEST_LABEL: &str = "lightwhale.test=1";

/// Image label whose value identifies the inputs an image was built from.
/// An image whose value differs from the current one is rebuilt.
const FINGERPRINT_LABEL: &str = "lightwhale.test.fingerprint";

/// Version of the image recipes below. Increase it when an image's import
/// options (command, labels, ports) or root filesystem layout change, so
/// existing images are rebuilt.
const RECIPE_VERSION: u32 = 1;

/// Rust target of the workload binary. It is given explicitly so that
/// `RUSTFLAGS` applies to the binary only, not to build scripts.
const WORKLOAD_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Debian suite of the redis image.
const REDIS_SUITE: &str = "bookworm";

/// Machine-wide cache of the debootstrap result, which downloads packages
/// from the Debian mirror and is slow to build.
const CACHE_DIR: &str = "/var/cache/lightwhale";

/// apt source list whose `URIs:` line names the Debian mirror to use.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Builds every image the end-to-end tests use, unless it is up to date.
pub fn prepare_test_images(workspace_root: &Path) -> Result<()> {
    prepare_http_counter_image(workspace_root)?;
    prepare_redis_image()?;
    Ok(())
}

/// Builds the image for the demo container and returns its name.
///
/// The demo reuses the http-counter test image, so demo containers also
/// carry `lightwhale.test=1` and [`remove_test_leftovers`] removes them.
pub fn prepare_demo_image(workspace_root: &Path) -> Result<&'static str> {
    prepare_http_counter_image(workspace_root)?;
    Ok(HTTP_COUNTER_IMAGE)
}

/// Removes the containers and networks labelled `lightwhale.test=1` and
/// the network namespaces named `lwt-*` that tests left behind, for example
/// after a test process was killed. Images stay, as a cache.
pub fn remove_test_leftovers() -> Result<()> {
    let filter = format!("label={TEST_LABEL}");

    let mut containers = lines(&run(
        Command::new("docker").args(["ps", "-aq", "--filter", &filter])
    )?);
    // Stand-ins that a test daemon left behind hold addresses on the test
    // networks, which could not be removed otherwise.
    containers.extend(lines(&run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=lightwhale.stand-in",
    ]))?));
    if !containers.is_empty() {
        run(Command::new("docker").args(["rm", "-f"]).args(&containers))?;
        println!("removed {} test container(s)", containers.len());
    }

    let networks = lines(&run(
        Command::new("docker").args(["network", "ls", "-q", "--filter", &filter])
    )?);
    if !networks.is_empty() {
        run(Command::new("docker")
            .args(["network", "rm"])
            .args(&networks))?;
        println!("removed {} test network(s)", networks.len());
    }

    // `ip netns list` prints "NAME" or "NAME (id: N)" per line.
    let namespaces: Vec<String> = lines(&run(Command::new("ip").args(["netns", "list"]))?)
        .into_iter()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .filter(|name| name.starts_with("lwt-"))
        .collect();
    for name in &namespaces {
        // Deleting the namespace also deletes the veth pair that joins it to
        // the host, once no process runs inside it.
        run(Command::new("ip").args(["netns", "delete", name]))?;
    }
    if !namespaces.is_empty() {
        println!("removed {} test network namespace(s)", namespaces.len());
    }
    Ok(())
}

/// Builds the static http-counter binary and imports it as
/// [`HTTP_COUNTER_IMAGE`] unless the image already contains this binary.
fn prepare_http_counter_image(workspace_root: &Path) -> Result<()> {
    let target_dir = workspace_root.join("target/workload");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_streaming(
        Command::new(cargo)
            .current_dir(workspace_root)
            .args([
                "build",
                "--release",
                "-p",
                "lightwhale-tests",
                "--bin",
                "http-counter",
            ])
            .args(["--target", WORKLOAD_TARGET])
            .arg("--target-dir")
            .arg(&target_dir)
            // A static binary runs in an image that contains nothing else.
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            // Cargo prefers this variable over RUSTFLAGS, so an inherited
            // value would drop the static flag.
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
    )?;

    let binary = target_dir
        .join(WORKLOAD_TARGET)
        .join("release/http-counter");
    let sha256 = run(Command::new("sha256sum").arg(&binary))?;
    let sha256 = sha256.split_whitespace().next().unwrap_or_default();
    let fingerprint = format!("{RECIPE_VERSION}-{sha256}");
    if image_fingerprint(HTTP_COUNTER_IMAGE)?.as_deref() == Some(fingerprint.as_str()) {
        return Ok(());
    }

    let rootfs = target_dir.join("http-counter-rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)
            .with_context(|| format!("failed to remove {}", rootfs.display()))?;
    }
    fs::create_dir_all(&rootfs)
        .with_context(|| format!("failed to create {}", rootfs.display()))?;
    fs::copy(&binary, rootfs.join("http-counter")).with_context(|| {
        format!(
            "failed to copy {} into {}",
            binary.display(),
            rootfs.display()
        )
    })?;
    let tarball = target_dir.join("http-counter-rootfs.tar");
    create_tarball(&rootfs, &tarball)?;

    import_image(
        &tarball,
        HTTP_COUNTER_IMAGE,
        &[
            r#"CMD ["/http-counter"]"#.to_string(),
            "EXPOSE 8080".to_string(),
            format!("LABEL {TEST_LABEL}"),
            format!("LABEL {FINGERPRINT_LABEL}={fingerprint}"),
        ],
    )?;
    fs::remove_dir_all(&rootfs)
        .with_context(|| format!("failed to remove {}", rootfs.display()))?;
    fs::remove_file(&tarball).with_context(|| format!("failed to remove {}", tarball.display()))?;
    println!("imported {HTTP_COUNTER_IMAGE}");
    Ok(())
}

/// Imports [`REDIS_IMAGE`] unless it is up to date, building its root
/// filesystem with debootstrap once per machine.
fn prepare_redis_image() -> Result<()> {
    let fingerprint = format!("{RECIPE_VERSION}-{REDIS_SUITE}");
    if image_fingerprint(REDIS_IMAGE)?.as_deref() == Some(fingerprint.as_str()) {
        return Ok(());
    }

    // The file name names every input of debootstrap, so a cached tarball
    // always matches the arguments below.
    let tarball = Path::new(CACHE_DIR).join(format!("redis-{REDIS_SUITE}-minbase-rootfs.tar"));
    if !tarball.exists() {
        build_redis_rootfs(&tarball)?;
    }

    import_image(
        &tarball,
        REDIS_IMAGE,
        &[
            // Persistence is off so that the data lives only in memory and
            // survives a sleep only through the checkpoint.
            r#"CMD ["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no", "--bind", "0.0.0.0"]"#
                .to_string(),
            "EXPOSE 6379".to_string(),
            format!("LABEL {TEST_LABEL}"),
            format!("LABEL {FINGERPRINT_LABEL}={fingerprint}"),
        ],
    )?;
    println!("imported {REDIS_IMAGE} from {}", tarball.display());
    Ok(())
}

/// Runs debootstrap for a minimal Debian with redis-server and stores the
/// result as `tarball`.
fn build_redis_rootfs(tarball: &Path) -> Result<()> {
    if find_in_path("debootstrap").is_none() {
        bail!("debootstrap is not installed; install it with `apt-get install debootstrap`");
    }
    let mirror = debian_mirror(REDIS_SUITE)?;

    let cache = Path::new(CACHE_DIR);
    fs::create_dir_all(cache).with_context(|| format!("failed to create {}", cache.display()))?;
    let rootfs = cache.join(format!("redis-{REDIS_SUITE}-rootfs.partial"));
    remove_rootfs(&rootfs)?;

    println!("building the redis root filesystem with debootstrap from {mirror}");
    let started = Instant::now();
    run_streaming(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=redis-server", REDIS_SUITE])
            .arg(&rootfs)
            .arg(&mirror),
    )?;

    // Downloaded packages and package lists are not needed at run time.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        remove_files_in(&rootfs.join(dir))?;
    }

    // Write under a temporary name first so that an interrupted run never
    // leaves a truncated tarball that later runs would trust.
    let partial_tarball = tarball.with_extension("tar.partial");
    create_tarball(&rootfs, &partial_tarball)?;
    fs::rename(&partial_tarball, tarball).with_context(|| {
        format!(
            "failed to rename {} to {}",
            partial_tarball.display(),
            tarball.display()
        )
    })?;
    remove_rootfs(&rootfs)?;
    println!(
        "built {} in {:.1} s",
        tarball.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Returns the first mirror URI in [`DEBIAN_SOURCES`], preferring a stanza
/// that lists `suite` and skipping security-only stanzas.
fn debian_mirror(suite: &str) -> Result<String> {
    let sources = fs::read_to_string(DEBIAN_SOURCES).with_context(|| {
        format!("failed to read {DEBIAN_SOURCES}, which names the Debian mirror for debootstrap")
    })?;
    parse_debian_mirror(&sources, suite)
        .with_context(|| format!("no `URIs:` line for a Debian mirror in {DEBIAN_SOURCES}"))
}

/// Parses deb822 apt sources (`URIs:` and `Suites:` fields in stanzas
/// separated by blank lines).
fn parse_debian_mirror(sources: &str, suite: &str) -> Option<String> {
    let mut stanzas = Vec::new();
    let mut uris: Vec<&str> = Vec::new();
    let mut suites: Vec<&str> = Vec::new();
    for line in sources.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if !uris.is_empty() {
                stanzas.push((std::mem::take(&mut uris), std::mem::take(&mut suites)));
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("URIs:") {
            uris.extend(value.split_whitespace());
        } else if let Some(value) = line.strip_prefix("Suites:") {
            suites.extend(value.split_whitespace());
        }
    }

    let listing_suite = stanzas.iter().find(|(_, suites)| suites.contains(&suite));
    let not_security = stanzas
        .iter()
        .find(|(_, suites)| !suites.iter().all(|name| name.ends_with("-security")));
    listing_suite
        .or(not_security)
        .map(|(uris, _)| uris[0].to_string())
}

/// Removes a debootstrap target directory, first unmounting what
/// debootstrap may have left mounted inside it (`/proc`, `/sys`, or a bind
/// mount of the host's `/dev`) after a failed run. Deleting files through
/// such a mount would delete the host's own files.
fn remove_rootfs(rootfs: &Path) -> Result<()> {
    if !rootfs.exists() {
        return Ok(());
    }
    let mut mounts = mounts_below(rootfs)?;
    // Unmount the deepest mount points first.
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    for mount in &mounts {
        run(Command::new("umount").arg(mount))?;
    }
    let remaining = mounts_below(rootfs)?;
    if !remaining.is_empty() {
        bail!(
            "{} still has mounts below it ({}); unmount them, then delete it",
            rootfs.display(),
            remaining
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    fs::remove_dir_all(rootfs).with_context(|| format!("failed to remove {}", rootfs.display()))
}

/// Lists the mount points at or below `dir`, from `/proc/self/mountinfo`.
fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir =
        fs::canonicalize(dir).with_context(|| format!("failed to resolve {}", dir.display()))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .context("failed to read /proc/self/mountinfo")?;
    // The fifth field is the mount point, with spaces and other special
    // characters escaped as octal (`\040`), which never occur in our paths.
    Ok(mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|mount_point| mount_point.starts_with(&dir))
        .collect())
}

/// Deletes the files directly inside `dir`, keeping subdirectories.
fn remove_files_in(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", dir.display()))?;
        if entry.file_type()?.is_file() {
            fs::remove_file(entry.path())
                .with_context(|| format!("failed to remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes the contents of `dir` to a tar file, with every entry owned by
/// root (uid 0).
fn create_tarball(dir: &Path, tarball: &Path) -> Result<()> {
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(tarball)
        .arg("."))?;
    Ok(())
}

/// Imports `tarball` as image `name`, applying Dockerfile instructions
/// (`CMD`, `LABEL`, `EXPOSE`) to its configuration.
fn import_image(tarball: &Path, name: &str, changes: &[String]) -> Result<()> {
    let mut command = Command::new("docker");
    command.arg("import");
    for change in changes {
        command.arg("--change").arg(change);
    }
    command.arg(tarball).arg(name);
    let started = Instant::now();
    run(&mut command)?;
    println!(
        "docker import {name} took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The image that `name` pointed to before is now untagged. Prune
    // removes it, and other untagged test images, unless a container
    // still uses them.
    run(Command::new("docker").args([
        "image",
        "prune",
        "--force",
        "--filter",
        &format!("label={TEST_LABEL}"),
    ]))?;
    Ok(())
}

/// Returns the value of [`FINGERPRINT_LABEL`] on image `name`, or `None`
/// when the image or the label does not exist.
fn image_fingerprint(name: &str) -> Result<Option<String>> {
    let template = format!(r#"{{{{ index .Config.Labels "{FINGERPRINT_LABEL}" }}}}"#);
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", &template, name])
        .stdin(Stdio::null())
        .output()
        .context("failed to run docker; is it installed?")?;
    if output.status.success() {
        let value = String::from_utf8_lossy(&output.stdout).trim().to_string();
        return Ok(Some(value).filter(|value| !value.is_empty() && value != "<no value>"));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such image") {
        return Ok(None);
    }
    bail!("docker image inspect {name} failed: {}", stderr.trim())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `command` with its output going to this process's output, for long
/// steps whose progress the user should see.
fn run_streaming(command: &mut Command) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("failed to start `{}`", describe(command)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(command));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_debian_mirror;

    const SOURCES: &str = "\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn mirror_from_stanza_listing_suite() {
        assert_eq!(
            parse_debian_mirror(SOURCES, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_skips_security_stanza() {
        let reordered = SOURCES.split("\n\n").collect::<Vec<_>>();
        let sources = format!("{}\n\n{}", reordered[1], reordered[0]);
        assert_eq!(
            parse_debian_mirror(&sources, "trixie").as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_missing() {
        assert_eq!(parse_debian_mirror("Types: deb\n", "bookworm"), None);
    }
}
