//! The clawfort appliance's image definition, as a library: `image/clawfort.toml` with any
//! overlay files merged over it, and `image/targets/<target>.toml`, loaded, typed and
//! validated ([`LoadedConfig::load`]), and the template context the overlays are rendered with
//! ([`render`]).
//!
//! It is the one loader of the definition. `cargo xtask image` builds from it, the overlay
//! tests (`tests/overlays.rs`) render every target's overlay trees through it, and the
//! boot-and-probe suite reads what the image promises from it; none of them parses the TOML
//! files by itself. The build stages (bootstrap, customise, assemble, package) stay in xtask.

mod definition;
mod format;
mod load;
pub mod render;
mod size;
mod target;
mod validate;

pub use definition::*;
pub use format::Format;
pub use load::{known_targets, load_target, LoadedConfig};
pub use size::Size;
pub use target::Target;
pub use validate::{parse_duration, parse_mode, parse_size};
