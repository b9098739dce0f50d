//! `port-monitor top`: `status` refreshed live. A thread reads the node every interval while
//! the screen answers keys; the terminal is put back as it was on every way out, a panic
//! included.

mod app;
mod view;

use std::{
    io::{IsTerminal as _, Stdout},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor, event, execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

use self::app::App;
use super::status::Gatherer;

/// How long the screen waits for a key before looking for a new reading.
const KEY_WAIT: Duration = Duration::from_millis(100);

/// Runs until q.
///
/// # Errors
/// When stdout is no terminal, the terminal fails, or the reading thread stops.
pub fn run(gatherer: Gatherer, refresh: Duration) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("top needs a terminal; for scripts use: port-monitor status --output json");
    }
    let (sender, readings) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("refresh".into())
        .spawn(move || {
            loop {
                let started = Instant::now();
                if sender.send(gatherer.gather()).is_err() {
                    return;
                }
                std::thread::sleep(refresh.saturating_sub(started.elapsed()));
            }
        })
        .context("starting the refresh thread")?;
    let mut screen = Screen::enter()?;
    let mut app = App::new();
    while !app.quit {
        match readings.try_recv() {
            Ok(node) => app.update(node),
            Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => bail!("the thread reading the node stopped"),
        }
        screen
            .terminal
            .draw(|frame| view::draw(frame, &app, refresh))
            .context("drawing")?;
        if event::poll(KEY_WAIT).context("reading keys")?
            && let event::Event::Key(key) = event::read().context("reading keys")?
            && key.kind == event::KeyEventKind::Press
        {
            app.handle(key);
        }
    }
    Ok(())
}

/// The terminal in raw mode on the alternate screen, restored when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> Result<Self> {
        // Restore before the panic message is printed, or it would be lost on the alternate
        // screen and the shell left in raw mode.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        terminal::enable_raw_mode().context("putting the terminal in raw mode")?;
        let screen = Self {
            terminal: Terminal::new(CrosstermBackend::new(std::io::stdout()))
                .context("opening the terminal")?,
        };
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)
            .context("switching to the alternate screen")?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen, shows the cursor. Doing it twice is harmless.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}
