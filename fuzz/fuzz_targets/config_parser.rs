//! Any config text must give a `Config` or a `ConfigError`, never a panic; and an accepted
//! config must either pass or fail the fail-closed start check without panicking.
#![no_main]

use clawfort::config::{Config, EnvSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = EnvSource::fixed([
        ("OPENCLAW_GATEWAY_TOKEN".to_string(), "0123456789abcdef0123456789abcdef".to_string()),
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant-fuzz".to_string()),
    ]);
    if let Ok(config) = Config::parse(text, &env) {
        let _ = config.check_startable();
    }
});
