//! Teardown that also happens on Ctrl-C.
//!
//! A VM, a DHCP server and a network namespace must never outlive the command that made them.
//! Their owners are Drop guards, which covers errors and panics; an interrupt, though, ends the
//! process without unwinding. So every guard also registers its teardown here, and the Ctrl-C
//! handler runs whatever is still registered before exiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

type Teardown = Box<dyn FnOnce() + Send>;

static PENDING: Mutex<BTreeMap<u64, (String, Teardown)>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

/// A registered teardown. Dropping it runs the teardown (once); [`Registration::disarm`] forgets
/// it when the owner has already cleaned up in a better way.
pub struct Registration {
    id: u64,
}

/// Registers `teardown` to run when the returned value is dropped or the process is interrupted,
/// whichever comes first. `what` names the resource in the interrupt message.
pub fn on_exit(what: impl Into<String>, teardown: impl FnOnce() + Send + 'static) -> Registration {
    install_interrupt_handler();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock().insert(id, (what.into(), Box::new(teardown)));
    Registration { id }
}

impl Registration {
    /// Forgets the teardown without running it.
    pub fn disarm(self) {
        lock().remove(&self.id);
        std::mem::forget(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let entry = lock().remove(&self.id);
        if let Some((_, teardown)) = entry {
            teardown();
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, (String, Teardown)>> {
    // A panic inside a teardown must not stop the others from running.
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn install_interrupt_handler() {
    HANDLER.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            // Newest first: a VM goes before the namespace it runs in.
            let pending = std::mem::take(&mut *lock());
            for (_, (what, teardown)) in pending.into_iter().rev() {
                eprintln!("interrupted: tearing down {what}");
                teardown();
            }
            std::process::exit(130);
        });
        if let Err(err) = installed {
            eprintln!("warning: cannot install the Ctrl-C handler ({err}); an interrupt may leave VMs or namespaces behind");
        }
    });
}
