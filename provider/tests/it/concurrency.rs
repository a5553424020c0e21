//! Many runs share one executor (one engine, one pool) without interfering with each other.

use std::collections::BTreeMap;
use std::sync::Arc;

use provider::{Executor, RunRequest, Status};
use task_defs::Definition;

use crate::harness::{Case, example};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_runs_stay_separate() {
    let case = Arc::new(Case::new());
    let exec = case.executor();
    let def = Arc::new(Definition::load(&example("sha256sum")).unwrap());
    let mut handles = Vec::new();
    for i in 0..16 {
        let (input, output) = case.run_dirs();
        let content = format!("run {i} has its own input\n").repeat(i + 1);
        std::fs::write(input.join("data.txt"), &content).unwrap();
        let exec = exec.clone();
        let def = def.clone();
        handles.push(tokio::spawn(async move {
            let o = exec
                .run(RunRequest {
                    definition: def,
                    params: BTreeMap::new(),
                    input_dir: input,
                    output_dir: output.clone(),
                    secrets: Default::default(),
                })
                .await;
            (o, output, content)
        }));
    }
    for h in handles {
        let (o, output, content) = h.await.unwrap();
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        let sums = std::fs::read_to_string(output.join("SHA256SUMS")).unwrap();
        let expected = crate::cli::sha256_hex(content.as_bytes());
        assert_eq!(sums, format!("{expected}  data.txt\n"));
        assert_eq!(o.files.len(), 1);
    }
}
