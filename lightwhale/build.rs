use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds the eBPF programs of `lightwhale-ebpf` with the nightly toolchain,
/// and the stand-in's pause program, so that one `cargo build` of the daemon
/// embeds up-to-date copies of both.
fn main() -> anyhow::Result<()> {
    build_pause()?;

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf_package = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "lightwhale-ebpf")
        .ok_or_else(|| anyhow!("package lightwhale-ebpf not found in the workspace"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("the manifest of lightwhale-ebpf has no parent directory"))?;
    let package = aya_build::Package {
        name: ebpf_package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    // aya-build relays every line that the inner cargo prints to stderr as
    // a cargo warning. Quiet keeps the progress lines out and still shows
    // compiler errors and warnings.
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf([package], Toolchain::default())
}

/// Compiles `stand-in/pause.rs` into a static executable without the
/// standard library or C runtime, `$OUT_DIR/pause`.
fn build_pause() -> anyhow::Result<()> {
    let source = "stand-in/pause.rs";
    println!("cargo:rerun-if-changed={source}");
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR not set")?;
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = std::path::Path::new(&out_dir).join("pause");
    let status = std::process::Command::new(&rustc)
        .args(["--edition", "2021", "-C", "panic=abort", "-C", "opt-level=s", "-C", "strip=symbols"])
        .args(["-C", "relocation-model=static", "-C", "target-feature=+crt-static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .arg(source)
        .arg("-o")
        .arg(&output)
        .status()
        .with_context(|| format!("cannot run {rustc}"))?;
    if !status.success() {
        return Err(anyhow!("{rustc} failed to build {source}: {status}"));
    }
    Ok(())
}
