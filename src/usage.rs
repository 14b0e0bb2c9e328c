//! The usage ledger and the spend budget (a clawfort extension: `budget.dailyUsd`,
//! `budget.monthlyUsd`).
//!
//! Every model call appends one JSON line to `~/.openclaw/usage/ledger.jsonl` (see
//! [`ledger_path`]): its time, session, model, tokens and price in USD from the model's
//! `cost` (`null` when the model has none: the tokens still count, the call is "unpriced").
//! A budget warning (80 % of a limit reached) is appended as a line too, so a restart does
//! not repeat it, and so is its delivery to the owner (`notified`, written once a channel
//! has sent the owner the message), so a restart resends only a warning the owner never got.
//! Each line is written with one `write` on an `O_APPEND` file. A call's line is on disk
//! after [`Ledger::sync`], which the agent runs beside the sync of the turn's reply line,
//! before the reply is sent: a killed gateway loses nothing (the kernel holds what was
//! written), and a power cut can lose only calls of a turn whose reply was never sent. A
//! delivery mark is synced at once. The directory is created 700, the file 600.
//!
//! Periods are UTC calendar days and months: a day's budget resets at 00:00 UTC, whatever the
//! owner's time zone, so the limit means the same on every machine.
//!
//! The running totals of the current day and month live in memory, rebuilt from the file when
//! it is opened, so a call costs one append and no read. A line that does not parse is an
//! error naming the file and the line, never "nothing spent". The exception is a final line
//! without its newline, which only a crash in the middle of an append leaves behind: it is
//! cut off (that call goes unrecorded) with a warning, so the next append starts on a line of
//! its own.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::paths::Paths;
use crate::provider::{Cost, ModelRef, Usage};

/// Share of a limit at which the one-time warning fires.
pub const WARN_SHARE: f64 = 0.8;

/// `<state dir>/usage/ledger.jsonl`.
pub fn ledger_path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("usage").join("ledger.jsonl")
}

/// Spend limits in USD; `None` means no limit for that period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    fn config_key(self) -> &'static str {
        match self {
            Period::Daily => "budget.dailyUsd",
            Period::Monthly => "budget.monthlyUsd",
        }
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line {
    Call {
        ts: String,
        session: String,
        model: String,
        input: u64,
        output: u64,
        #[serde(rename = "cacheRead")]
        cache_read: u64,
        #[serde(rename = "cacheWrite")]
        cache_write: u64,
        usd: Option<f64>,
    },
    Warn {
        ts: String,
        period: Period,
        /// `2026-11-28` for a day, `2026-11` for a month.
        key: String,
    },
    /// The owner was sent the warning of this period.
    Notified {
        ts: String,
        period: Period,
        key: String,
    },
}

/// Tokens and money of a group of calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    pub calls: u64,
    /// Calls whose model has no `cost`: counted in `tokens`, not in `usd`.
    pub unpriced_calls: u64,
    pub usd: f64,
    pub tokens: Usage,
}

impl Spend {
    fn add(&mut self, usage: &Usage, usd: Option<f64>) {
        self.calls += 1;
        match usd {
            Some(usd) => self.usd += usd,
            None => self.unpriced_calls += 1,
        }
        self.tokens.input_tokens += usage.input_tokens;
        self.tokens.output_tokens += usage.output_tokens;
        self.tokens.cache_read_tokens += usage.cache_read_tokens;
        self.tokens.cache_write_tokens += usage.cache_write_tokens;
    }
}

/// The totals of one UTC day or month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodTotals {
    /// `2026-11-28` or `2026-11`.
    pub key: String,
    pub total: Spend,
    pub by_model: BTreeMap<String, Spend>,
    pub by_session: BTreeMap<String, Spend>,
    /// The 80 % warning was already given for this period.
    pub warned: bool,
    /// ... and the owner was sent it.
    pub notified: bool,
}

impl PeriodTotals {
    /// Moves to a later period; never back (see [`Ledger::record_at`] on clocks).
    fn roll_to(&mut self, key: &str) {
        if key > self.key.as_str() {
            *self = PeriodTotals {
                key: key.to_owned(),
                ..Default::default()
            };
        }
    }

    fn add(&mut self, session: &str, model: &str, usage: &Usage, usd: Option<f64>) {
        self.total.add(usage, usd);
        self.by_model
            .entry(model.to_owned())
            .or_default()
            .add(usage, usd);
        self.by_session
            .entry(session.to_owned())
            .or_default()
            .add(usage, usd);
    }
}

/// Today's and this month's totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub day: PeriodTotals,
    pub month: PeriodTotals,
}

impl Totals {
    fn period_mut(&mut self, period: Period) -> &mut PeriodTotals {
        match period {
            Period::Daily => &mut self.day,
            Period::Monthly => &mut self.month,
        }
    }

    fn roll_to(&mut self, at: Timestamp) {
        let (day, month) = period_keys(at);
        self.day.roll_to(&day);
        self.month.roll_to(&month);
    }

    /// Counts a line in the periods it belongs to; lines of other periods change nothing.
    fn apply(&mut self, line: &Line, at: Timestamp) {
        let (day, month) = period_keys(at);
        let (today, this_month) = (self.day.key == day, self.month.key == month);
        match line {
            Line::Call {
                session,
                model,
                input,
                output,
                cache_read,
                cache_write,
                usd,
                ..
            } => {
                let usage = Usage {
                    input_tokens: *input,
                    output_tokens: *output,
                    cache_read_tokens: *cache_read,
                    cache_write_tokens: *cache_write,
                };
                if this_month {
                    self.month.add(session, model, &usage, *usd);
                }
                if today {
                    self.day.add(session, model, &usage, *usd);
                }
            }
            Line::Warn { period, key, .. } => {
                let totals = self.period_mut(*period);
                if *key == totals.key {
                    totals.warned = true;
                }
            }
            Line::Notified { period, key, .. } => {
                let totals = self.period_mut(*period);
                if *key == totals.key {
                    totals.notified = true;
                }
            }
        }
    }
}

/// The UTC day and month keys of an instant.
fn period_keys(at: Timestamp) -> (String, String) {
    let date = TimeZone::UTC.to_datetime(at).date();
    (
        date.to_string(),
        format!("{:04}-{:02}", date.year(), date.month()),
    )
}

/// Something the owner should be told after a call.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetEvent {
    /// Spending crossed 80 % of a limit (once per period).
    Warn {
        period: Period,
        /// The period's key (`2026-11-28`, `2026-11`), for [`Ledger::mark_notified`].
        key: String,
        spent_usd: f64,
        limit_usd: f64,
    },
}

impl std::fmt::Display for BudgetEvent {
    /// The words for the log and for the owner.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let BudgetEvent::Warn {
            period,
            key,
            spent_usd,
            limit_usd,
        } = self;
        let (name, resets) = match period {
            Period::Daily => ("daily", "at 00:00 UTC"),
            Period::Monthly => ("monthly", "on the 1st at 00:00 UTC"),
        };
        write!(
            f,
            "${spent_usd:.2} of the ${limit_usd:.2} {name} spend budget is used ({:.0} %, \
             {key} UTC); at 100 % model calls stop until the budget resets {resets} (or \
             raise {})",
            spent_usd / limit_usd * 100.0,
            period.config_key()
        )
    }
}

/// What [`Ledger::record`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The call's price; `None` when the model has no `cost`.
    pub usd: Option<f64>,
    pub events: Vec<BudgetEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("usage ledger {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "usage ledger {} line {line} is damaged ({detail}); the spend budget cannot be \
         checked without it: repair or move the file aside (moving it forgets what was spent)",
        .path.display()
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
}

/// A call refused because a limit is reached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the {} spend budget of ${limit_usd:.2} is used up (${spent_usd:.2} spent in {key} UTC); \
     model calls resume when the period ends, or raise {}",
    if *.period == Period::Daily { "daily" } else { "monthly" },
    .period.config_key()
)]
pub struct BudgetExceeded {
    pub period: Period,
    pub key: String,
    pub spent_usd: f64,
    pub limit_usd: f64,
}

/// The totals at `now` from the ledger at `path`, read-only (for `clawfort` commands while
/// the gateway runs): nothing is created or cut; a missing file means nothing was spent yet,
/// and a partial final line (an append in progress) is not counted.
pub fn read_totals(path: &Path, now: Timestamp) -> Result<Totals, LedgerError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(LedgerError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(parse(path, &text[..complete_len(&text)], now)?.0)
}

/// The length of the ledger up to and including its last newline.
fn complete_len(text: &[u8]) -> usize {
    text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The totals of the current periods from complete ledger lines, and the latest time in them.
/// The current periods are those of `now`, or of a later line if the clock went back.
fn parse(path: &Path, text: &[u8], now: Timestamp) -> Result<(Totals, Timestamp), LedgerError> {
    let mut totals = Totals::default();
    totals.roll_to(now);
    let mut latest = Timestamp::UNIX_EPOCH;
    for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        let corrupt = |detail: String| LedgerError::Corrupt {
            path: path.to_owned(),
            line: index + 1,
            detail,
        };
        let line: Line = serde_json::from_slice(raw).map_err(|e| corrupt(e.to_string()))?;
        let ts = match &line {
            Line::Call { ts, .. } | Line::Warn { ts, .. } | Line::Notified { ts, .. } => ts,
        };
        let at: Timestamp = ts
            .parse()
            .map_err(|e| corrupt(format!("bad time `{ts}`: {e}")))?;
        latest = latest.max(at);
        totals.roll_to(at);
        totals.apply(&line, at);
    }
    Ok((totals, latest))
}

/// The open ledger; cheap to share behind an `Arc`. Appends are serialized by its lock.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    budget: Budget,
    inner: Mutex<Inner>,
    /// The same file, synced without holding the lock, so other sessions' calls are not
    /// held up by one session's `fdatasync`.
    sync_file: File,
}

#[derive(Debug)]
struct Inner {
    file: File,
    totals: Totals,
    /// The latest time recorded; a clock that went back is treated as standing still.
    latest: Timestamp,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` and rebuilds the current totals from it.
    pub fn open(path: &Path, budget: Budget) -> Result<Self, LedgerError> {
        Self::open_at(path, budget, Timestamp::now())
    }

    /// [`Ledger::open`] as if it were `now` (tests, and a clock the caller controls).
    pub fn open_at(path: &Path, budget: Budget, now: Timestamp) -> Result<Self, LedgerError> {
        let io = |source| LedgerError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        let complete = complete_len(&text);
        if complete < text.len() {
            tracing::warn!(
                path = %path.display(),
                "usage ledger ends in a partial line (an append cut short by a crash); dropping it"
            );
            file.set_len(complete as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        let (totals, latest) = parse(path, &text[..complete], now)?;
        let sync_file = file.try_clone().map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            budget,
            sync_file,
            inner: Mutex::new(Inner {
                file,
                totals,
                latest: latest.max(now),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// Refuses a new call when a limit is reached in the current period.
    pub fn check(&self) -> Result<(), BudgetExceeded> {
        self.check_at(Timestamp::now())
    }

    pub fn check_at(&self, now: Timestamp) -> Result<(), BudgetExceeded> {
        let mut inner = self.lock();
        inner.totals.roll_to(now);
        for (period, limit) in self.limits() {
            let totals = match period {
                Period::Daily => &inner.totals.day,
                Period::Monthly => &inner.totals.month,
            };
            if totals.total.usd >= limit {
                return Err(BudgetExceeded {
                    period,
                    key: totals.key.clone(),
                    spent_usd: totals.total.usd,
                    limit_usd: limit,
                });
            }
        }
        Ok(())
    }

    /// Appends one call, priced with `cost`, and returns any budget warning it caused. The
    /// line is written (one small `write`, microseconds) but on disk only after
    /// [`Ledger::sync`].
    pub fn record(
        &self,
        session: &str,
        model: &ModelRef,
        cost: Option<&Cost>,
        usage: &Usage,
    ) -> Result<Recorded, LedgerError> {
        self.record_at(Timestamp::now(), session, model, cost, usage)
    }

    /// [`Ledger::record`] at `now`. Should the clock go back (a wrong RTC corrected by NTP),
    /// the call is booked at the latest time already recorded: periods only move forward, so
    /// a backward clock can never reopen a spent budget.
    pub fn record_at(
        &self,
        now: Timestamp,
        session: &str,
        model: &ModelRef,
        cost: Option<&Cost>,
        usage: &Usage,
    ) -> Result<Recorded, LedgerError> {
        let mut inner = self.lock();
        let now = now.max(inner.latest);
        inner.latest = now;
        let usd = cost.map(|c| c.price(usage));
        let line = Line::Call {
            ts: now.to_string(),
            session: session.to_owned(),
            model: model.to_string(),
            input: usage.input_tokens,
            output: usage.output_tokens,
            cache_read: usage.cache_read_tokens,
            cache_write: usage.cache_write_tokens,
            usd,
        };
        self.append(&mut inner, &line)?;
        inner.totals.roll_to(now);
        inner.totals.apply(&line, now);

        let mut events = Vec::new();
        for (period, limit) in self.limits() {
            let totals = inner.totals.period_mut(period);
            if totals.warned || totals.total.usd < WARN_SHARE * limit {
                continue;
            }
            let spent_usd = totals.total.usd;
            let warn = Line::Warn {
                ts: now.to_string(),
                period,
                key: totals.key.clone(),
            };
            let key = totals.key.clone();
            self.append(&mut inner, &warn)?;
            inner.totals.apply(&warn, now);
            events.push(BudgetEvent::Warn {
                period,
                key,
                spent_usd,
                limit_usd: limit,
            });
        }
        Ok(Recorded { usd, events })
    }

    /// Records that the owner was sent the warning of `period` `key` (see the module docs).
    pub fn mark_notified(&self, period: Period, key: &str) -> Result<(), LedgerError> {
        self.mark_notified_at(Timestamp::now(), period, key)
    }

    /// [`Ledger::mark_notified`] at `now`.
    pub fn mark_notified_at(
        &self,
        now: Timestamp,
        period: Period,
        key: &str,
    ) -> Result<(), LedgerError> {
        let mut inner = self.lock();
        let now = now.max(inner.latest);
        inner.latest = now;
        let line = Line::Notified {
            ts: now.to_string(),
            period,
            key: key.to_owned(),
        };
        self.append(&mut inner, &line)?;
        inner.totals.roll_to(now);
        inner.totals.apply(&line, now);
        drop(inner);
        self.sync()
    }

    /// The warnings of the current periods that the owner was never sent (a restart, or no
    /// channel reached them), with today's figures.
    pub fn undelivered_warnings(&self) -> Vec<BudgetEvent> {
        self.undelivered_warnings_at(Timestamp::now())
    }

    pub fn undelivered_warnings_at(&self, now: Timestamp) -> Vec<BudgetEvent> {
        let mut inner = self.lock();
        inner.totals.roll_to(now);
        let mut events = Vec::new();
        for (period, limit) in self.limits() {
            let totals = inner.totals.period_mut(period);
            if totals.warned && !totals.notified {
                events.push(BudgetEvent::Warn {
                    period,
                    key: totals.key.clone(),
                    spent_usd: totals.total.usd,
                    limit_usd: limit,
                });
            }
        }
        events
    }

    /// Today's and this month's totals.
    pub fn totals(&self) -> Totals {
        self.totals_at(Timestamp::now())
    }

    pub fn totals_at(&self, now: Timestamp) -> Totals {
        let mut inner = self.lock();
        inner.totals.roll_to(now);
        inner.totals.clone()
    }

    fn limits(&self) -> impl Iterator<Item = (Period, f64)> {
        [
            (Period::Daily, self.budget.daily_usd),
            (Period::Monthly, self.budget.monthly_usd),
        ]
        .into_iter()
        .filter_map(|(p, limit)| Some((p, limit?)))
    }

    fn append(&self, inner: &mut Inner, line: &Line) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(line).expect("ledger lines always serialize");
        bytes.push(b'\n');
        inner.file.write_all(&bytes).map_err(io)
    }

    /// Makes every line written so far durable (blocking: one `fdatasync`, milliseconds on
    /// an SD card; nothing when nothing was written since).
    pub fn sync(&self) -> Result<(), LedgerError> {
        self.sync_file
            .sync_data()
            .map_err(|source| LedgerError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves totals that are at worst one call short.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
