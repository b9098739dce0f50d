//! Network namespaces made for one test and removed after it.

use std::{
    fs::File,
    os::{fd::AsFd as _, unix::fs::MetadataExt as _},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

/// A namespace created with `ip netns add`, loopback up, deleted on drop.
pub struct TestNetns {
    pub name: String,
    /// Inode number: the `netns` label value.
    pub id: u32,
}

impl TestNetns {
    pub fn new(purpose: &str) -> Self {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pmtest-{purpose}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let id = std::fs::metadata(PathBuf::from("/run/netns").join(&name))
            .expect("namespace bind mount")
            .ino();
        Self {
            name,
            id: u32::try_from(id).expect("namespace inode fits u32"),
        }
    }

    /// The `netns` label value.
    pub fn label(&self) -> String {
        self.id.to_string()
    }

    /// Runs `work` on a thread inside the namespace; sockets it returns stay in it.
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let file =
            File::open(PathBuf::from("/run/netns").join(&self.name)).expect("open namespace");
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            work()
        })
        .join()
        .expect("work inside the namespace panicked")
    }

    /// Writes a sysctl of this namespace (`/proc/sys` shows the writer's namespace).
    pub fn sysctl(&self, name: &str, value: &str) {
        let path = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
        let value = value.to_owned();
        self.run(move || std::fs::write(&path, value).expect("write sysctl"));
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .expect("start command");
    assert!(status.success(), "{program} {args:?} failed: {status}");
}
