//! `causeway crds`: print or write the CRD manifests.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use causeway_crds::manifests;

/// Prints every CRD, or writes one file per CRD into `out_dir`, or prints the API reference.
pub fn run(out_dir: Option<&Path>, reference: bool) -> anyhow::Result<ExitCode> {
    if reference {
        print!("{}", manifests::reference_markdown());
        return Ok(ExitCode::SUCCESS);
    }
    match out_dir {
        None => {
            print!("{}", manifests::render_all().context("rendering the CRDs")?);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in manifests::crds() {
                let path = dir.join(manifests::file_name(&crd));
                let text = manifests::render(&crd).context("rendering a CRD")?;
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
