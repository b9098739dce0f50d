//! Finds, downloads and extracts a Debian kernel, and makes what booting it needs. Everything is
//! cached in `target/kernels/<version>/`, so each kernel is downloaded once.
//!
//! Debian's kernels, because they are what users of this Debian release run (6.1, and 6.12
//! from backports), they come from the archive this machine already trusts, and their
//! `-unsigned` packages hold the image, its modules and its config in one file.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use object::{Object as _, ObjectSection as _};

use super::{
    Kernel, initramfs,
    tools::{capture, pipe, write_atomically},
};
use crate::cmd;

/// Prepares the newest kernel of `series` under `kernels` (see [`super::prepare`]).
pub fn prepare(series: &'static str, kernels: &Path) -> Result<Kernel> {
    fs::create_dir_all(kernels)
        .with_context(|| format!("could not create {}", kernels.display()))?;
    let kernels = std::path::absolute(kernels)?;
    let (version, dir) = match fetch(series, &kernels) {
        Ok(fetched) => fetched,
        Err(error) => {
            // Package lists older than the archive name packages it no longer has.
            eprintln!("vm: {error:#}\nvm: updating apt's package lists and trying again");
            apt_update()?;
            fetch(series, &kernels)?
        }
    };
    let bzimage = dir.join(format!("boot/vmlinuz-{version}"));
    let vmlinux = dir.join(format!("boot/vmlinux-{version}"));
    if !vmlinux.exists() {
        let image =
            fs::read(&bzimage).with_context(|| format!("could not read {}", bzimage.display()))?;
        let elf = uncompressed_image(&image)
            .with_context(|| format!("could not decompress {}", bzimage.display()))?;
        write_atomically(&vmlinux, &elf)?;
    }
    let btf = dir.join("btf");
    if !btf.exists() {
        write_atomically(&btf, &extract_btf(&vmlinux)?)?;
    }
    let modules = dir.join("lib/modules").join(&version);
    if !modules.join("modules.dep").exists() {
        // The package leaves modules.dep to its postinst, which `dpkg-deb -x` does not run.
        capture(Command::new("depmod").arg("-b").arg(&dir).arg(&version))
            .context("depmod failed: is kmod installed? (cargo xtask setup installs it)")?;
    }
    let initramfs = initramfs::build(&dir, &version)?;
    Ok(Kernel {
        series,
        version,
        dir,
        vmlinux,
        initramfs,
    })
}

/// Finds the newest package of `series` and downloads and extracts it, unless that was done
/// before; returns its version and directory.
fn fetch(series: &str, kernels: &Path) -> Result<(String, PathBuf)> {
    let package = if let Some(package) = search(series)? {
        package
    } else {
        // A fresh machine may have no package lists yet.
        apt_update()?;
        search(series)?.with_context(|| {
            format!(
                "no Debian package linux-image-{series}*-amd64-unsigned: add the archive that \
                 has it (for 6.12 on Debian 12, bookworm-backports or bookworm-security) to \
                 apt's sources"
            )
        })?
    };
    let version = package
        .strip_prefix("linux-image-")
        .and_then(|rest| rest.strip_suffix("-unsigned"))
        .with_context(|| format!("unexpected kernel package name {package}"))?
        .to_owned();
    let dir = kernels.join(&version);
    let bzimage = dir.join(format!("boot/vmlinuz-{version}"));
    if !bzimage.exists() {
        download(&package, kernels, &dir)?;
        ensure!(
            bzimage.exists(),
            "{package} has no boot/vmlinuz-{version}; delete {} and try again",
            dir.display()
        );
    }
    Ok((version, dir))
}

fn apt_update() -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get update failed: run as root, with the network up")
}

/// The name of the newest `linux-image-<series>…-amd64-unsigned` package apt knows of.
fn search(series: &str) -> Result<Option<String>> {
    let pattern = format!(
        "^linux-image-{}[.-].*-amd64-unsigned$",
        series.replace('.', r"\.")
    );
    let found = capture(Command::new("apt-cache").args(["search", "--names-only", &pattern]))
        .context("apt-cache search failed: is this a Debian machine?")?;
    Ok(String::from_utf8_lossy(&found)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        // Other flavours: fewer drivers (cloud) or another scheduler (PREEMPT_RT).
        .filter(|name| !name.contains("-cloud-") && !name.contains("-rt-"))
        .max_by_key(|name| numbers(name))
        .map(ToOwned::to_owned))
}

/// The numbers in a package name, in order: within a series the names differ only in them, so
/// comparing these lists orders the packages by version (6.1.0-9 before 6.1.0-57).
fn numbers(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse().ok())
        .collect()
}

/// Downloads `package` and extracts it to `dir`, through a temporary directory beside it so
/// that an interrupted download leaves nothing that looks complete.
fn download(package: &str, kernels: &Path, dir: &Path) -> Result<()> {
    let work = kernels.join(format!(".download.{}", std::process::id()));
    fs::create_dir_all(&work).with_context(|| format!("could not create {}", work.display()))?;
    let result = download_in(package, &work, dir);
    fs::remove_dir_all(&work).ok();
    result
}

fn download_in(package: &str, work: &Path, dir: &Path) -> Result<()> {
    cmd::run(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(work),
    )
    .with_context(|| format!("could not download {package}"))?;
    let deb = fs::read_dir(work)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = work.join("tree");
    capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))
        .with_context(|| format!("could not extract {}", deb.display()))?;
    match fs::rename(&tree, dir) {
        // Another run of xtask extracted the same package meanwhile; ours is dropped.
        Err(_) if dir.join("boot").exists() => Ok(()),
        result => result.with_context(|| format!("could not create {}", dir.display())),
    }
}

/// The ELF vmlinux inside a bzImage.
///
/// qemu boots an ELF vmlinux through its PVH entry point, which skips the bzImage's own
/// decompressor: under software emulation that decompression costs seconds on every boot,
/// while doing it here costs them once. The compressed kernel's place is in the bzImage's
/// setup header (boot protocol 2.08+: `payload_offset`, `payload_length`).
fn uncompressed_image(bzimage: &[u8]) -> Result<Vec<u8>> {
    let u32_at = |offset: usize| -> Result<usize> {
        let bytes = bzimage
            .get(offset..offset + 4)
            .context("the file is too short for a bzImage")?;
        Ok(u32::from_le_bytes(bytes.try_into()?).try_into()?)
    };
    ensure!(
        bzimage.get(0x202..0x206) == Some(b"HdrS"),
        "not a bzImage (no HdrS setup header)"
    );
    let setup_sectors = match bzimage[0x1f1] {
        0 => 4,
        sectors => usize::from(sectors),
    };
    let start = (setup_sectors + 1) * 512 + u32_at(0x248)?;
    let payload = bzimage
        .get(start..start + u32_at(0x24c)?)
        .context("the bzImage's payload lies outside the file")?;
    // What Debian's kernels use: xz (6.1), zstd (6.12); gzip is the kernel's default.
    let (program, args): (&str, &[&str]) = if payload.starts_with(b"\xfd7zXZ\0") {
        ("xz", &["-dc", "--single-stream"])
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        ("zstd", &["-dc"])
    } else if payload.starts_with(b"\x1f\x8b") {
        ("gzip", &["-dc"])
    } else {
        bail!(
            "unknown compression (payload starts with {:02x?})",
            &payload[..payload.len().min(6)]
        );
    };
    // The kernel's build appends the uncompressed size after the compressed stream, which
    // decompressors take for a truncated second stream and fail on, after writing the image.
    let elf = pipe(program, args, payload)?;
    ensure!(
        elf.starts_with(b"\x7fELF"),
        "{program} did not produce an ELF image"
    );
    Ok(elf)
}

/// The raw `.BTF` section of a vmlinux: what `/sys/kernel/btf/vmlinux` shows in that kernel.
fn extract_btf(vmlinux: &Path) -> Result<Vec<u8>> {
    let image =
        fs::read(vmlinux).with_context(|| format!("could not read {}", vmlinux.display()))?;
    let elf = object::File::parse(&*image)
        .with_context(|| format!("{} is not a valid ELF file", vmlinux.display()))?;
    let section = elf.section_by_name(".BTF").with_context(|| {
        format!(
            "{} has no .BTF section (a kernel without CONFIG_DEBUG_INFO_BTF)",
            vmlinux.display()
        )
    })?;
    Ok(section.data()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_packages_by_version() {
        let mut names = [
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-47-amd64-unsigned",
        ];
        names.sort_by_key(|name| numbers(name));
        assert_eq!(names[2], "linux-image-6.1.0-57-amd64-unsigned");
        assert!(
            numbers("linux-image-6.12.117+deb12-amd64-unsigned")
                > numbers("linux-image-6.12.99+deb12-amd64-unsigned")
        );
    }

    #[test]
    fn rejects_what_is_not_a_bzimage() {
        assert!(uncompressed_image(&[0; 4096]).is_err());
        assert!(uncompressed_image(b"short").is_err());
    }
}
