//! A terminal for the tests that drive a program as a person would: tmux, with keys sent
//! and the screen read back.

use std::{
    process::Command,
    time::{Duration, Instant},
};

/// A tmux server of the test's own (its own socket), killed on drop.
pub struct Tmux {
    socket: String,
}

/// How long the screen has to show what a key asked for.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

impl Tmux {
    /// A 160x48 terminal running `sh`, or `None` (the test skips) without tmux.
    pub fn start() -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            let message = "tmux is not installed (cargo xtask setup installs it)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message}; CI=true forbids skipping"
            );
            eprintln!("SKIPPED {message}");
            return None;
        }
        let tmux = Self {
            socket: format!("port-monitor-test-{}", std::process::id()),
        };
        tmux.run(&["new-session", "-d", "-x", "160", "-y", "48", "sh"]);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `text` and presses Enter.
    pub fn type_line(&self, text: &str) {
        self.run(&["send-keys", "-l", text]);
        self.run(&["send-keys", "Enter"]);
    }

    pub fn press(&self, key: &str) {
        self.run(&["send-keys", key]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p"])
    }

    /// Polls the screen until `done` holds; fails with the screen after `SCREEN_TIMEOUT`.
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
