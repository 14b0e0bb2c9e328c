//! Every probe, in the order the suite runs them: cheap checks from inside, then the attacks
//! from outside, then the probes that disturb the guest (gateway kill, fail2ban ban), then the
//! memory in use at idle (once rootless Docker is up with the sandbox image), then the agent probe
//! (it reconfigures the gateway through `clawfort setup`) and the probes that drive the
//! gateway through the stranger it paired (the rogue model, its commands in the sandbox, the
//! sandbox's container inspected, its commands on the host, a fail2ban ban reaching the owner
//! it makes; each restores the config it changes), then the integrity check (its first-boot baseline has had the time it needs), the
//! audit probe (the audit log's size then covers the suite), the AppArmor probe (the gateway's
//! whole workload has run in its profile by then), the gateway's update through apt (it
//! restarts the gateway, so after everything that drives it), and last the uniqueness probe,
//! which gives the second boot the most time to come up.

pub mod agent;
pub mod apparmor;
pub mod audit;
pub mod boot;
pub mod commands;
pub mod egress;
pub mod events;
pub mod fail2ban;
pub mod gateway;
pub mod hardening;
pub mod host_commands;
pub mod integrity;
pub mod journal;
pub mod network;
pub mod rogue;
pub mod sandbox;
pub mod ssh;
pub mod system;
pub mod uniqueness;
pub mod update;

use anyhow::Result;

use crate::Ctx;

/// A named check: `Ok(detail)` passes, `Err(reason)` fails.
pub struct Probe {
    pub name: &'static str,
    pub run: fn(&Ctx) -> Result<String>,
}

pub const ALL: &[Probe] = &[
    Probe {
        name: "gateway_runs_as_service_user",
        run: gateway::gateway_runs_as_service_user,
    },
    Probe {
        name: "gateway_listens_on_loopback_only",
        run: gateway::gateway_listens_on_loopback_only,
    },
    Probe {
        name: "gateway_healthz_ok",
        run: gateway::gateway_healthz_ok,
    },
    Probe {
        name: "gateway_api_requires_token",
        run: gateway::gateway_api_requires_token,
    },
    Probe {
        name: "gateway_token_file_protected",
        run: gateway::gateway_token_file_protected,
    },
    Probe {
        name: "nftables_input_policy_drop",
        run: system::nftables_input_policy_drop,
    },
    Probe {
        name: "unattended_upgrades_security",
        run: system::unattended_upgrades_security,
    },
    Probe {
        name: "kernel_updates_reach_boot_loader",
        run: boot::kernel_updates_reach_boot_loader,
    },
    Probe {
        name: "sysctls_as_defined",
        run: hardening::sysctls_as_defined,
    },
    Probe {
        name: "core_dumps_go_nowhere",
        run: hardening::core_dumps_go_nowhere,
    },
    Probe {
        name: "gateway_unit_exposure",
        run: hardening::gateway_unit_exposure,
    },
    Probe {
        name: "kernel_modules_blocked",
        run: hardening::kernel_modules_blocked,
    },
    Probe {
        name: "login_umask",
        run: hardening::login_umask,
    },
    Probe {
        name: "sshd_sessions_and_banner",
        run: hardening::sshd_sessions_and_banner,
    },
    Probe {
        name: "needrestart_automatic",
        run: hardening::needrestart_automatic,
    },
    Probe {
        name: "service_user_has_no_sudo",
        run: system::service_user_has_no_sudo,
    },
    Probe {
        name: "service_user_egress_confined",
        run: network::service_user_egress_confined,
    },
    Probe {
        name: "egress_proxy_allow_list",
        run: egress::egress_proxy_allow_list,
    },
    Probe {
        name: "service_user_cannot_use_root_docker",
        run: system::service_user_cannot_use_root_docker,
    },
    Probe {
        name: "security_audit_no_critical",
        run: gateway::security_audit_no_critical,
    },
    Probe {
        name: "root_fs_grown_to_disk",
        run: system::root_fs_grown_to_disk,
    },
    Probe {
        name: "ssh_offers_only_publickey",
        run: ssh::ssh_offers_only_publickey,
    },
    Probe {
        name: "ssh_refuses_root_with_valid_key",
        run: ssh::ssh_refuses_root_with_valid_key,
    },
    Probe {
        name: "ssh_offers_no_weak_algorithms",
        run: ssh::ssh_offers_no_weak_algorithms,
    },
    Probe {
        name: "tcp_port_scan",
        run: network::tcp_port_scan,
    },
    Probe {
        name: "udp_port_scan",
        run: network::udp_port_scan,
    },
    Probe {
        name: "gateway_restarts_after_kill",
        run: gateway::gateway_restarts_after_kill,
    },
    Probe {
        name: "fail2ban_bans_and_unbans",
        run: fail2ban::fail2ban_bans_and_unbans,
    },
    Probe {
        name: "idle_memory_within_budget",
        run: system::idle_memory_within_budget,
    },
    Probe {
        name: "agent_round_trip",
        run: agent::agent_round_trip,
    },
    Probe {
        name: "malicious_model_contained",
        run: rogue::malicious_model_contained,
    },
    Probe {
        name: "rogue_commands_contained",
        run: commands::rogue_commands_contained,
    },
    Probe {
        name: "rootless_sandbox_isolated",
        run: sandbox::rootless_sandbox_isolated,
    },
    Probe {
        name: "rogue_host_commands_contained",
        run: host_commands::rogue_host_commands_contained,
    },
    Probe {
        name: "security_events_reach_owner",
        run: events::security_events_reach_owner,
    },
    Probe {
        name: "integrity_baseline_and_check",
        run: integrity::integrity_baseline_and_check,
    },
    Probe {
        name: "agent_commands_audited",
        run: audit::agent_commands_audited,
    },
    Probe {
        name: "apparmor_confines_gateway_and_commands",
        run: apparmor::apparmor_confines_gateway_and_commands,
    },
    Probe {
        name: "apparmor_confines_sandbox",
        run: apparmor::apparmor_confines_sandbox,
    },
    Probe {
        name: "journal_forwarded_to_collector",
        run: journal::journal_forwarded_to_collector,
    },
    Probe {
        name: "gateway_updates_from_its_repository",
        run: update::gateway_updates_from_its_repository,
    },
    Probe {
        name: "first_boot_identity_unique",
        run: uniqueness::first_boot_identity_unique,
    },
];
