//! The one stage runner. A stage is a name, a directory, a key (the [`Fingerprint`] of
//! everything it reads) and a build closure that fills the directory; the runner decides
//! whether to reuse the directory, clears and stamps it, shows progress, times the stage and
//! names it in any error. No stage writes its own stamp routine.
//!
//! The stamp is written only after the build closure succeeded, and removed before it starts,
//! so a failed or interrupted stage is never mistaken for a finished one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::cache;
use super::progress::StageProgress;

/// Each stage's name, duration and outcome ("built", "reused ...").
pub type StageTiming = (&'static str, Duration, &'static str);

/// A check that a stage directory's output is usable, besides its stamp.
type ReadyCheck<'a> = Box<dyn Fn(&Path) -> bool + 'a>;

/// One cached stage: where its output lives and what it was made from.
pub struct Stage<'a> {
    pub name: &'static str,
    /// The stage's own directory; cleared before a build, so nothing else may live in it.
    pub dir: PathBuf,
    pub key: String,
    /// Besides a matching stamp, what makes the output usable (its main file is there, the
    /// artifacts elsewhere are untouched); `None`: the stamp alone.
    pub ready: Option<ReadyCheck<'a>>,
    /// Build even when the stamp matches (`--refresh` for the package stages).
    pub force: bool,
}

impl<'a> Stage<'a> {
    pub fn new(name: &'static str, dir: PathBuf, key: String) -> Self {
        Self {
            name,
            dir,
            key,
            ready: None,
            force: false,
        }
    }

    /// Reuse only when `ready(dir)` also holds.
    pub fn ready(mut self, ready: impl Fn(&Path) -> bool + 'a) -> Self {
        self.ready = Some(Box::new(ready));
        self
    }

    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    fn reusable(&self) -> bool {
        cache::stamp_matches(&self.dir, &self.key)
            && self.ready.as_ref().is_none_or(|ready| ready(&self.dir))
    }
}

/// Runs the stages of one build in order and keeps their timings.
pub struct Runner {
    logs: PathBuf,
    /// `--rebuild`: no stage is reused.
    rebuild: bool,
    timings: Vec<StageTiming>,
}

impl Runner {
    pub fn new(logs: PathBuf, rebuild: bool) -> Self {
        Self {
            logs,
            rebuild,
            timings: Vec::new(),
        }
    }

    /// Runs a stage that has no cached output of its own (the gateway, which cargo caches; the
    /// scrub, which must check every build): progress, timing and the stage's name on errors.
    pub fn always<T>(
        &mut self,
        name: &'static str,
        body: impl FnOnce(&mut StageProgress) -> Result<(T, &'static str)>,
    ) -> Result<T> {
        let mut progress = StageProgress::start(name, &self.logs)?;
        match body(&mut progress) {
            Ok((value, note)) => {
                let took = progress.finish(note);
                self.timings.push((name, took, note));
                Ok(value)
            }
            Err(err) => {
                let log = progress.log_path().display().to_string();
                progress.fail();
                Err(err.context(format!("stage `{name}` failed (log: {log})")))
            }
        }
    }

    /// Reuses `stage.dir` when its stamp matches `stage.key`; otherwise empties it, runs
    /// `build` on it and stamps it. Returns whether it was reused.
    pub fn cached(
        &mut self,
        stage: Stage<'_>,
        build: impl FnOnce(&mut StageProgress, &Path) -> Result<()>,
    ) -> Result<bool> {
        let reuse = self.would_reuse(&stage);
        self.always(stage.name, |progress| {
            if reuse {
                progress.step(format!("reusing {}", stage.dir.display()));
                return Ok((true, "reused (inputs unchanged)"));
            }
            if stage.dir.exists() {
                progress.step(format!("removing the previous {}", stage.dir.display()));
                cache::remove_stamp(&stage.dir)?;
                cache::remove_tree(&stage.dir)?;
            }
            std::fs::create_dir_all(&stage.dir)
                .with_context(|| format!("cannot create {}", stage.dir.display()))?;
            build(progress, &stage.dir)?;
            cache::write_stamp(&stage.dir, &stage.key)?;
            Ok((false, "built"))
        })
    }

    /// Whether [`cached`](Self::cached) would reuse `stage` rather than build it.
    pub fn would_reuse(&self, stage: &Stage<'_>) -> bool {
        !self.rebuild && !stage.force && stage.reusable()
    }

    pub fn into_timings(self) -> Vec<StageTiming> {
        self.timings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_is_built_once_then_reused_until_its_key_changes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("stage");
        let mut runner = Runner::new(root.path().join("logs"), false);
        let mut builds = 0;
        let mut run = |runner: &mut Runner, key: &str| {
            runner
                .cached(Stage::new("t", dir.clone(), key.into()), |_, dir| {
                    builds += 1;
                    std::fs::write(dir.join("out"), key)?;
                    Ok(())
                })
                .unwrap()
        };
        assert!(!run(&mut runner, "k1"));
        assert!(run(&mut runner, "k1"));
        assert!(!run(&mut runner, "k2"));
        assert_eq!(builds, 2);
        assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "k2");
        assert_eq!(runner.into_timings().len(), 3);
    }

    #[test]
    fn a_failed_build_leaves_no_stamp_and_names_the_stage() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("stage");
        let mut runner = Runner::new(root.path().join("logs"), false);
        let err = runner
            .cached(Stage::new("broken", dir.clone(), "k".into()), |_, _| {
                anyhow::bail!("no")
            })
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("stage `broken` failed"),
            "{err:#}"
        );
        assert!(!cache::stamp_matches(&dir, "k"));
    }

    #[test]
    fn rebuild_and_a_missing_output_defeat_a_matching_stamp() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("stage");
        let build = |_: &mut StageProgress, _: &Path| Ok(());
        let stage = || Stage::new("t", dir.clone(), "k".into());
        assert!(!Runner::new(root.path().join("l"), false)
            .cached(stage(), build)
            .unwrap());
        assert!(!Runner::new(root.path().join("l"), true)
            .cached(stage(), build)
            .unwrap());
        let missing = stage().ready(|dir| dir.join("absent").exists());
        assert!(!Runner::new(root.path().join("l"), false)
            .cached(missing, build)
            .unwrap());
    }
}
