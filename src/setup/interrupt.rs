//! Ctrl-C (SIGINT), SIGTERM and SIGHUP (the SSH connection dropped) while setup runs.
//!
//! Left to the default action, a signal kills setup wherever it is: at a hidden prompt the
//! terminal is left without echo (the prompt turned it off and dies before turning it back
//! on), and during the writes a temporary file may stay behind with only some of the files
//! replaced. So setup catches them:
//! - before the writes, it restores the terminal as it was, says nothing was written, and
//!   exits with status 130;
//! - during the writes, it waits until they are done, then exits the same way saying they
//!   were written (or, when they failed, setup reports that error as usual);
//! - after them, it exits at once saying so.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tokio::signal::unix::{signal, SignalKind};

/// The exit status of a command ended by Ctrl-C, as shells report it (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    /// The writes run; `interrupted` records a signal to act on once they are done.
    Writing {
        interrupted: bool,
    },
    After,
}

struct State {
    phase: Phase,
    /// The controlling terminal and its settings when setup started.
    terminal: Option<(File, rustix::termios::Termios)>,
}

static STATE: OnceLock<Mutex<State>> = OnceLock::new();

/// Catches the signals from now on (a thread waits for them). Call once, early.
pub fn install() -> anyhow::Result<()> {
    let terminal = File::open("/dev/tty").ok().and_then(|tty| {
        let saved = rustix::termios::tcgetattr(&tty).ok()?;
        Some((tty, saved))
    });
    let state = State {
        phase: Phase::Before,
        terminal,
    };
    if STATE.set(Mutex::new(state)).is_err() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before this returns, so no signal falls between install and watch.
    let (mut int, mut term, mut hup) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::Builder::new()
        .name("setup-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    on_signal();
                }
            })
        })?;
    Ok(())
}

/// Runs the writes; a signal meanwhile takes effect only when they are done. When they
/// failed, their error is what setup reports.
pub fn while_writing<T, E>(write: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    set_phase(Phase::Writing { interrupted: false });
    let result = write();
    let Some(state) = STATE.get() else {
        return result;
    };
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let interrupted = state.phase == Phase::Writing { interrupted: true };
    state.phase = Phase::After;
    if interrupted && result.is_ok() {
        end(&mut state);
    }
    result
}

/// Ends setup as interrupted (the hidden prompt saw Ctrl-C itself: with echo off the
/// terminal sends no signal, so the prompt reads it as a key).
pub fn interrupted() -> ! {
    match STATE.get() {
        Some(state) => end(&mut state.lock().unwrap_or_else(|e| e.into_inner())),
        None => {
            say("nothing was written");
            std::process::exit(EXIT_INTERRUPTED)
        }
    }
}

fn set_phase(phase: Phase) {
    if let Some(state) = STATE.get() {
        state.lock().unwrap_or_else(|e| e.into_inner()).phase = phase;
    }
}

fn on_signal() {
    let Some(state) = STATE.get() else { return };
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    match state.phase {
        Phase::Writing { .. } => state.phase = Phase::Writing { interrupted: true },
        Phase::Before | Phase::After => end(&mut state),
    }
}

/// Restores the terminal, says what was written, and exits. Called with the state locked,
/// so the other thread cannot start (or be in the middle of) the writes meanwhile.
fn end(state: &mut State) -> ! {
    if let Some((tty, saved)) = &state.terminal {
        let _ = rustix::termios::tcsetattr(tty, rustix::termios::OptionalActions::Now, saved);
    }
    let what = match state.phase {
        Phase::Before => "nothing was written",
        Phase::Writing { .. } | Phase::After => {
            "the new settings were written first; they apply when the gateway restarts"
        }
    };
    say(what);
    std::process::exit(EXIT_INTERRUPTED)
}

/// Writes the `interrupted:` line in one piece while holding stdout: the other thread may be
/// printing the summary, and a formatted write to stderr goes out in several `write`s, between
/// which its lines landed in the middle of this one.
fn say(what: &str) {
    let line = format!("\ninterrupted: {what}\n");
    let _stdout = std::io::stdout().lock();
    // After a hangup the terminal is gone: a failed write must not stop the exit.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
