//! Compiles the XDP programs in `bpf/` with clang (`-target bpf`, libbpf's headers) into
//! OUT_DIR. Without clang (or when it fails) the objects are written empty, a cargo warning says
//! so, and the binary offers only the userspace data path (`--datapath xdp` then fails with a
//! message naming the missing toolchain).

use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: [&str; 2] = ["balancer", "decap"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let clang = std::env::var("CAUSEWAY_CLANG").unwrap_or_else(|_| "clang".to_owned());
    println!("cargo:rerun-if-env-changed=CAUSEWAY_CLANG");
    println!("cargo:rerun-if-changed=bpf/common.h");
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    let mut missing = None;
    for p in PROGRAMS {
        let src = format!("bpf/{p}.bpf.c");
        println!("cargo:rerun-if-changed={src}");
        let obj = out.join(format!("{p}.o"));
        if missing.is_none()
            && let Err(why) = compile(&clang, &src, &obj, multiarch)
        {
            missing = Some(why);
        }
        if missing.is_some() {
            // An empty object: the binary reports that XDP was not built.
            let _ = std::fs::write(&obj, []);
        }
    }
    if let Some(why) = missing {
        println!(
            "cargo:warning=causeway-l4lb: XDP programs not built ({why}); only the userspace \
             data path will be available. Install clang and libbpf-dev (scripts/install-deps) \
             and rebuild."
        );
        for p in PROGRAMS {
            let _ = std::fs::write(out.join(format!("{p}.o")), []);
        }
    }
}

fn compile(clang: &str, src: &str, obj: &Path, multiarch: &str) -> Result<(), String> {
    let output = Command::new(clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(obj)
        .output()
        .map_err(|e| format!("running {clang}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!("{clang} failed on {src}: {first}"))
}
