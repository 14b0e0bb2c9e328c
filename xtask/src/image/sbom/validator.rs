//! The SBOM's validator: `pyspdxtools` of the `spdx-tools` package (the SPDX project's own
//! Python tools; Debian has no package of it), installed at a pinned version into a virtual
//! environment under `target/`. It parses the document and checks it against SPDX 2.3:
//! field names and types, SPDXIDs, relationship ends, license expressions against the SPDX
//! license list. It exits non-zero and names each problem on an invalid document.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

/// The pinned release (a new one can tighten its checks: bump it on purpose).
const SPDX_TOOLS: &str = "spdx-tools==0.8.3";

/// The virtual environment: named after the pin, so a bump makes a fresh one.
fn venv(repo: &Path) -> PathBuf {
    repo.join("target").join(SPDX_TOOLS.replace("==", "-"))
}

/// `pyspdxtools`, if it is installed.
pub fn installed(repo: &Path) -> Option<PathBuf> {
    Some(venv(repo).join("bin/pyspdxtools")).filter(|p| p.is_file())
}

/// `pyspdxtools`, installing it first when it is missing (python3-venv, then PyPI).
pub fn ensure(sh: &Shell, repo: &Path) -> Result<PathBuf> {
    if let Some(program) = installed(repo) {
        return Ok(program);
    }
    let venv = venv(repo);
    cmd!(sh, "python3 -m venv {venv}").run().with_context(|| {
        format!(
            "cannot create the virtual environment {} for {SPDX_TOOLS} (Debian: apt-get install python3-venv)",
            venv.display()
        )
    })?;
    let pip = venv.join("bin/pip");
    cmd!(sh, "{pip} install --quiet {SPDX_TOOLS}")
        .run()
        .with_context(|| {
            format!(
                "cannot install {SPDX_TOOLS} from PyPI into {}",
                venv.display()
            )
        })?;
    installed(repo).with_context(|| format!("{SPDX_TOOLS} installed no bin/pyspdxtools"))
}

/// Validates `document`; the error carries the validator's findings.
pub fn validate(sh: &Shell, pyspdxtools: &Path, document: &Path) -> Result<()> {
    let output = cmd!(sh, "{pyspdxtools} -i {document}")
        .quiet()
        .ignore_status()
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} is not a valid SPDX document:\n{}{}",
        document.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
