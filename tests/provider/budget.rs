//! The usage ledger and the spend budget, across reopenings (a restarted gateway).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use clawfort::provider::{Cost, ModelRef, Usage};
use clawfort::usage::{Budget, BudgetEvent, Ledger, LedgerError, Period};
use jiff::Timestamp;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn sonnet() -> ModelRef {
    "anthropic/claude-sonnet-4-5".parse().unwrap()
}

/// $3 / $15 per million: one million input tokens cost $3.
const COST: Cost = Cost {
    input: 3.0,
    output: 15.0,
    cache_read: 0.3,
    cache_write: 3.75,
};

fn million_input() -> Usage {
    Usage {
        input_tokens: 1_000_000,
        ..Usage::default()
    }
}

#[test]
fn calls_are_priced_recorded_and_totalled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage").join("ledger.jsonl");
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    let usage = Usage {
        input_tokens: 1000,
        output_tokens: 500,
        cache_read_tokens: 10_000,
        cache_write_tokens: 2000,
    };
    let recorded = ledger
        .record_at(
            now,
            "agent:main:telegram:dm:42",
            &sonnet(),
            Some(&COST),
            &usage,
        )
        .unwrap();
    // 1000*3 + 500*15 + 10000*0.3 + 2000*3.75 = 3000 + 7500 + 3000 + 7500 = 21000 micro-USD
    assert!(
        (recorded.usd.unwrap() - 0.021).abs() < 1e-12,
        "{recorded:?}"
    );
    let local: ModelRef = "ollama/qwen3".parse().unwrap();
    let unpriced = ledger
        .record_at(now, "agent:main:main", &local, None, &usage)
        .unwrap();
    assert_eq!(unpriced.usd, None);

    let totals = ledger.totals_at(now);
    assert_eq!(totals.day.key, "2026-11-28");
    assert_eq!(totals.month.key, "2026-11");
    assert_eq!(totals.day.total.calls, 2);
    assert_eq!(totals.day.total.unpriced_calls, 1);
    assert_eq!(totals.day.total.tokens.cache_read_tokens, 20_000);
    assert!((totals.month.by_model["anthropic/claude-sonnet-4-5"].usd - 0.021).abs() < 1e-12);
    assert_eq!(totals.day.by_session["agent:main:main"].unpriced_calls, 1);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kind"], "call");
    assert_eq!(lines[0]["ts"], "2026-11-28T10:00:00Z");
    assert_eq!(lines[0]["cacheRead"], 10_000);
    assert_eq!(lines[1]["usd"], serde_json::Value::Null);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);

    // The read-only view (the CLI) sees the same.
    assert_eq!(clawfort::usage::read_totals(&path, now).unwrap(), totals);
    assert_eq!(
        clawfort::usage::read_totals(&dir.path().join("none.jsonl"), now)
            .unwrap()
            .day
            .total
            .calls,
        0
    );

    // A reopen (a restart) rebuilds the same totals from the file.
    drop(ledger);
    let again = Ledger::open_at(&path, Budget::default(), now).unwrap();
    assert_eq!(again.totals_at(now), totals);
}

#[test]
fn the_80_percent_warning_comes_once_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let budget = Budget {
        daily_usd: Some(10.0),
        monthly_usd: None,
    };
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    for _ in 0..2 {
        let r = ledger
            .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
            .unwrap();
        assert!(r.events.is_empty(), "$6 of $10 is below 80 %");
    }
    let r = ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    assert_eq!(
        r.events,
        vec![BudgetEvent::Warn {
            period: Period::Daily,
            key: "2026-11-28".into(),
            spent_usd: 9.0,
            limit_usd: 10.0
        }]
    );
    drop(ledger);

    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    assert!(ledger.totals_at(now).day.warned);
    let r = ledger
        .record_at(
            now,
            "s",
            &sonnet(),
            Some(&COST),
            &Usage {
                input_tokens: 1000,
                ..Usage::default()
            },
        )
        .unwrap();
    assert!(
        r.events.is_empty(),
        "the warning was already given before the restart"
    );

    // A new day warns again.
    let tomorrow = at("2026-11-29T00:00:01Z");
    let mut events = Vec::new();
    for _ in 0..3 {
        events.extend(
            ledger
                .record_at(tomorrow, "s", &sonnet(), Some(&COST), &million_input())
                .unwrap()
                .events,
        );
    }
    assert_eq!(events.len(), 1);
}

#[test]
fn a_warning_is_undelivered_until_marked_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let budget = Budget {
        daily_usd: Some(10.0),
        monthly_usd: Some(10.0),
    };
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    for _ in 0..3 {
        ledger
            .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
            .unwrap();
    }
    let undelivered = ledger.undelivered_warnings_at(now);
    assert_eq!(undelivered.len(), 2, "{undelivered:?}");
    assert_eq!(
        undelivered[0].to_string(),
        "$9.00 of the $10.00 daily spend budget is used (90 %, 2026-11-28 UTC); at 100 % \
         model calls stop until the budget resets at 00:00 UTC (or raise budget.dailyUsd)"
    );
    ledger
        .mark_notified_at(now, Period::Daily, "2026-11-28")
        .unwrap();
    drop(ledger);

    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    let undelivered = ledger.undelivered_warnings_at(now);
    assert!(
        matches!(&undelivered[..], [BudgetEvent::Warn { period: Period::Monthly, key, .. }] if key == "2026-11"),
        "{undelivered:?}"
    );
    // The next day's warning is a new one.
    assert!(ledger
        .undelivered_warnings_at(at("2026-11-29T00:00:01Z"))
        .iter()
        .all(|w| matches!(
            w,
            BudgetEvent::Warn {
                period: Period::Monthly,
                ..
            }
        )));
}

#[test]
fn a_spent_budget_refuses_calls_across_a_restart_until_the_period_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let budget = Budget {
        daily_usd: Some(100.0),
        monthly_usd: Some(5.0),
    };
    let now = at("2026-11-28T23:00:00Z");
    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    assert!(ledger.check_at(now).is_ok());
    let r = ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    assert_eq!(r.events.len(), 0, "$3 of $5 is 60 %");
    let r = ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    assert!(matches!(
        r.events[..],
        [BudgetEvent::Warn {
            period: Period::Monthly,
            ..
        }]
    ));
    drop(ledger);

    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    let refused = ledger.check_at(now).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the monthly spend budget of $5.00 is used up ($6.00 spent in 2026-11 UTC); model calls \
         resume when the period ends, or raise budget.monthlyUsd"
    );
    // Still refused tomorrow (same month), allowed next month.
    assert!(ledger.check_at(at("2026-11-30T23:59:59Z")).is_err());
    assert!(ledger.check_at(at("2026-12-01T00:00:00Z")).is_ok());
}

#[test]
fn a_damaged_ledger_is_an_error_naming_file_and_line_never_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    drop(ledger);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"call\",\"ts\":\"yesterday\"}\n");
    std::fs::write(&path, &text).unwrap();

    let err = Ledger::open_at(
        &path,
        Budget {
            daily_usd: Some(1.0),
            monthly_usd: None,
        },
        now,
    )
    .unwrap_err();
    assert!(
        matches!(err, LedgerError::Corrupt { line: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "usage ledger {} line 2 is damaged",
            path.display()
        )),
        "{msg}"
    );
}

#[test]
fn a_torn_final_line_is_dropped_and_the_next_append_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    drop(ledger);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"call\",\"ts\":\"2026-11-28T10:0"); // power cut mid-append
    std::fs::write(&path, &text).unwrap();

    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    assert_eq!(ledger.totals_at(now).day.total.calls, 1);
    ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    drop(ledger);
    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    assert_eq!(ledger.totals_at(now).day.total.calls, 2);
}

#[test]
fn concurrent_appends_are_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Arc::new(Ledger::open_at(&path, Budget::default(), now).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let usage = Usage {
                        input_tokens: 10,
                        ..Usage::default()
                    };
                    ledger
                        .record_at(now, &format!("s{t}"), &sonnet(), Some(&COST), &usage)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(ledger);
    let ledger = Ledger::open_at(&path, Budget::default(), now).unwrap();
    let totals = ledger.totals_at(now);
    assert_eq!(totals.day.total.calls, 100);
    assert_eq!(totals.day.by_session.len(), 4);
}

#[test]
fn calls_of_earlier_periods_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let october = at("2026-10-31T23:59:59Z");
    let ledger = Ledger::open_at(&path, Budget::default(), october).unwrap();
    ledger
        .record_at(october, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    drop(ledger);
    let now = at("2026-11-01T00:00:00Z");
    let ledger = Ledger::open_at(
        &path,
        Budget {
            daily_usd: Some(1.0),
            monthly_usd: Some(1.0),
        },
        now,
    )
    .unwrap();
    assert_eq!(ledger.totals_at(now).month.total.calls, 0);
    assert!(ledger.check_at(now).is_ok());
}

#[test]
fn a_clock_going_back_does_not_reopen_a_spent_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let budget = Budget {
        daily_usd: Some(5.0),
        monthly_usd: None,
    };
    let now = at("2026-11-28T10:00:00Z");
    let ledger = Ledger::open_at(&path, budget, now).unwrap();
    ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    ledger
        .record_at(now, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    let earlier = at("2026-11-27T10:00:00Z");
    assert!(ledger.check_at(earlier).is_err(), "in memory");
    ledger
        .record_at(earlier, "s", &sonnet(), Some(&COST), &million_input())
        .unwrap();
    assert!(ledger.check_at(now).is_err());
    assert_eq!(ledger.totals_at(now).day.total.calls, 3);
    drop(ledger);
    let ledger = Ledger::open_at(&path, budget, earlier).unwrap();
    assert!(
        ledger.check_at(earlier).is_err(),
        "after a restart with the clock behind"
    );
}
