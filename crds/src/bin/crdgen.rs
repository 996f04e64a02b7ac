//! `crdgen`: prints Millrace's CustomResourceDefinitions as YAML, or with `--out-dir DIR`
//! writes one file per CRD there (what `charts/millrace/crds/` holds).

use std::path::PathBuf;
use std::process::ExitCode;

use millrace_crds::crdgen;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str =
        "usage: crdgen [--out-dir DIR]\n  prints every CRD as YAML, or writes DIR/<plural>.yaml";
    let out_dir = match args.as_slice() {
        [] => None,
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [flag, dir] if flag == "--out-dir" => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    for crd in crdgen::all() {
        let text = match crdgen::render(&crd) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("rendering {}: {err}", crdgen::file_name(&crd));
                return ExitCode::FAILURE;
            }
        };
        match &out_dir {
            None => print!("---\n{text}"),
            Some(dir) => {
                let path = dir.join(crdgen::file_name(&crd));
                if let Err(err) = std::fs::write(&path, text) {
                    eprintln!("writing {}: {err}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote {}", path.display());
            }
        }
    }
    ExitCode::SUCCESS
}
