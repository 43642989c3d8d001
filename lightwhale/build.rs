use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds the eBPF programs of `lightwhale-ebpf` with the nightly toolchain,
/// so that one `cargo build` of the daemon embeds an up-to-date object.
fn main() -> anyhow::Result<()> {
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
