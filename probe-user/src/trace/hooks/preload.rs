//! Loading the stages' programs side by side before they are attached one by one. The kernel
//! verifies each program as it is loaded, the largest part of a start (most of it under
//! emulation, where one verification takes up to a quarter of a second), and verifications
//! run in parallel on several CPUs. Attaching stays in the plan's order (`attach_plan`), which
//! finds the programs loaded, or the error their load met.

use std::{collections::HashMap, sync::Mutex};

use aya::{Btf, Ebpf, programs::Program};

use super::{Candidate, load_program};

/// What a stage will try, in order: its eligible candidates.
pub type StageWork = Vec<&'static Candidate>;

/// Load errors by program name, as the plan's sequential load would have met them.
pub type LoadFailures = HashMap<&'static str, anyhow::Error>;

/// For each stage, loads its candidates in order until one loads whole, and that one's extra
/// unless listed in `skip_extras` (the kernel lacks what it needs); stages are spread over one
/// thread per CPU. A candidate that fails to load keeps the programs it did load
/// (`attach_plan` unloads a candidate that fails, as it would have).
pub fn preload(
    ebpf: &mut Ebpf,
    btf: &Btf,
    stages: Vec<StageWork>,
    skip_extras: &[&str],
) -> LoadFailures {
    let mut programs: HashMap<&str, &mut Program> = ebpf.programs_mut().collect();
    // Each program belongs to one stage: the stages' shares are disjoint.
    let work: Vec<(StageWork, HashMap<&str, &mut Program>)> = stages
        .into_iter()
        .map(|stage| {
            let mut own = HashMap::new();
            for name in stage_programs(&stage) {
                if let Some(program) = programs.remove(name) {
                    own.insert(name, program);
                }
            }
            (stage, own)
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(work.len());
    let queue = Mutex::new(work);
    let failures = Mutex::new(LoadFailures::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut work| work.pop());
                    let Ok(Some((stage, mut programs))) = next else {
                        break;
                    };
                    let failed = load_stage(&stage, &mut programs, btf, skip_extras);
                    if let Ok(mut failures) = failures.lock() {
                        failures.extend(failed);
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap_or_default()
}

fn stage_programs(stage: &StageWork) -> Vec<&'static str> {
    let mut names = Vec::new();
    for candidate in stage {
        names.extend(candidate.programs.iter().map(|spec| spec.program));
        names.extend(candidate.extra.map(|extra| extra.program.program));
    }
    names
}

/// Loads the stage's first candidate that loads whole, and its extra.
fn load_stage(
    stage: &StageWork,
    programs: &mut HashMap<&str, &mut Program>,
    btf: &Btf,
    skip_extras: &[&str],
) -> Vec<(&'static str, anyhow::Error)> {
    let mut failed = Vec::new();
    let mut load = |spec: &super::ProgramSpec, failed: &mut Vec<_>| {
        let Some(program) = programs.get_mut(spec.program) else {
            // Missing from the object: attach_plan says so.
            return false;
        };
        match load_program(program, spec.attach, btf) {
            Ok(()) => true,
            Err(e) => {
                failed.push((spec.program, e));
                false
            }
        }
    };
    for candidate in stage {
        if candidate
            .programs
            .iter()
            .all(|spec| load(spec, &mut failed))
        {
            if let Some(extra) = candidate.extra
                && !skip_extras.contains(&extra.label)
            {
                load(&extra.program, &mut failed);
            }
            break;
        }
    }
    failed
}
