//! The guest's initramfs: a static busybox, the two init scripts and the kernel modules that
//! reach the host's files (virtio PCI, 9p over virtio, overlayfs). Debian builds these as
//! modules, so something must load them before the root can be mounted; busybox does it
//! (`init.sh`), and being static it runs before any library is reachable.
//!
//! Written as a `newc` cpio archive (the format the kernel unpacks), uncompressed: it is
//! small, and decompressing it would cost boot time under software emulation.

use std::{
    fs,
    hash::{DefaultHasher, Hash as _, Hasher as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};

use super::tools::{capture, pipe, write_atomically};

/// Stage 1: loads the modules, mounts the host's root, switches to it.
const INIT: &str = include_str!("init.sh");
/// Stage 2: mounts what eBPF programs need, runs the command, powers off.
const STAGE2: &str = include_str!("stage2.sh");

/// Where Debian's busybox-static puts its binary.
const BUSYBOX: &str = "/bin/busybox";

/// The modules `init.sh` needs to mount its root, with what they depend on.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// Builds (once per content of the scripts and busybox) the initramfs of the kernel extracted
/// in `dir`, and returns its path.
pub fn build(dir: &Path, version: &str) -> Result<PathBuf> {
    let busybox = fs::metadata(BUSYBOX).with_context(|| {
        format!("no {BUSYBOX}: install busybox-static (cargo xtask setup installs it)")
    })?;
    // A new file name when the scripts or busybox change; edited scripts take effect at once.
    let mut key = DefaultHasher::new();
    (INIT, STAGE2, busybox.len(), busybox.mtime()).hash(&mut key);
    let path = dir.join(format!("initramfs-{:016x}.cpio", key.finish()));
    if path.exists() {
        return Ok(path);
    }
    let mut archive = Cpio::default();
    for directory in [
        "bin", "dev", "proc", "sys", "lower", "upper", "newroot", "ko",
    ] {
        archive.directory(directory);
    }
    // So that init's output reaches the serial console before it mounts devtmpfs.
    archive.character_device("dev/console", 5, 1);
    let busybox_binary = fs::read(BUSYBOX).with_context(|| format!("could not read {BUSYBOX}"))?;
    archive.file("bin/busybox", 0o755, &busybox_binary);
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("stage2", 0o755, STAGE2.as_bytes());
    for (index, module) in modules(dir, version)?.iter().enumerate() {
        let name = module
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split(".ko").next())
            .with_context(|| format!("unexpected module file {}", module.display()))?;
        // Numbered: init.sh loads them in the order of its glob.
        archive.file(
            &format!("ko/{index:02}-{name}.ko"),
            0o644,
            &decompressed(module)?,
        );
    }
    write_atomically(&path, &archive.finish())?;
    // Initramfs files of earlier scripts are never used again.
    for entry in fs::read_dir(dir)?.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("initramfs-") && name.ends_with(".cpio") && entry.path() != path {
            fs::remove_file(entry.path()).ok();
        }
    }
    Ok(path)
}

/// The module files to load, dependencies first, each once. Modules built into the kernel
/// (`builtin` in modprobe's answer; virtio PCI is in 6.12) need no file.
fn modules(dir: &Path, version: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for module in MODULES {
        let plan = capture(Command::new("modprobe").arg("--dirname").arg(dir).args([
            "--set-version",
            version,
            "--show-depends",
            module,
        ]))
        .with_context(|| format!("modprobe could not find {module} for kernel {version}"))?;
        for line in String::from_utf8_lossy(&plan).lines() {
            if let Some(file) = line.strip_prefix("insmod ") {
                let file = PathBuf::from(file.trim());
                if !files.contains(&file) {
                    files.push(file);
                }
            }
        }
    }
    Ok(files)
}

/// A module file's contents, uncompressed: busybox's insmod passes them to `init_module`,
/// which takes no compressed modules.
fn decompressed(module: &Path) -> Result<Vec<u8>> {
    let contents =
        fs::read(module).with_context(|| format!("could not read {}", module.display()))?;
    let name = module.to_string_lossy();
    let plain = if name.ends_with(".xz") {
        pipe("xz", &["-dc"], &contents)?
    } else if name.ends_with(".zst") {
        pipe("zstd", &["-dc"], &contents)?
    } else if name.ends_with(".gz") {
        pipe("gzip", &["-dc"], &contents)?
    } else {
        contents
    };
    ensure!(
        plain.starts_with(b"\x7fELF"),
        "could not decompress {}",
        module.display()
    );
    Ok(plain)
}

/// A `newc` cpio archive being written (see the kernel's
/// Documentation/driver-api/early-userspace/buffer-format.rst).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    entries: u32,
}

impl Cpio {
    fn directory(&mut self, name: &str) {
        self.entry(name, 0o040_755, 2, (0, 0), &[]);
    }

    fn character_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, 1, (major, minor), &[]);
    }

    fn file(&mut self, name: &str, permissions: u32, contents: &[u8]) {
        self.entry(name, 0o100_000 | permissions, 1, (0, 0), contents);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.bytes
    }

    #[expect(
        clippy::cast_possible_truncation,
        reason = "newc's fields are 32 bits; the archive's files are a few megabytes"
    )]
    fn entry(&mut self, name: &str, mode: u32, links: u32, device: (u32, u32), contents: &[u8]) {
        self.entries += 1;
        let fields = [
            self.entries,          // inode
            mode,                  //
            0,                     // uid
            0,                     // gid
            links,                 //
            0,                     // mtime
            contents.len() as u32, //
            0,                     // device major
            0,                     // device minor
            device.0,              // rdev major
            device.1,              // rdev minor
            name.len() as u32 + 1, // name size, with its NUL
            0,                     // checksum, unused by newc
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(contents);
        self.pad();
    }

    /// Names and contents start on 4-byte boundaries.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_newc_entries() {
        let mut archive = Cpio::default();
        archive.file("init", 0o755, b"#!/bin/sh\n");
        let bytes = archive.finish();
        assert_eq!(bytes.len() % 4, 0);
        let header = std::str::from_utf8(&bytes[..110]).expect("an ASCII header");
        assert_eq!(&header[..6], "070701");
        assert_eq!(&header[14..22], "000081ed"); // regular file, rwxr-xr-x
        assert_eq!(&header[54..62], "0000000a"); // size
        assert_eq!(&header[94..102], "00000005"); // "init" and its NUL
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..126], b"#!/bin/sh\n"); // after padding to 116
        assert!(bytes.windows(10).any(|window| window == b"TRAILER!!!"));
    }
}
