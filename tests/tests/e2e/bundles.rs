//! A bundle packed by `task-defs` is the same definition to every tool that reads it.

use pinfold_e2e::{Scratch, example, ok_stdout, run};

#[test]
fn examples_survive_pack_unpack_with_their_identity() {
    let s = Scratch::new();
    for name in ["sha256sum", "wordfreq", "nbody"] {
        let dir = example(name);
        let id = ok_stdout(&run("task-defs", &[&"hash", &dir]));
        let bundle = s.path(&format!("{name}.tar"));
        assert_eq!(
            ok_stdout(&run("task-defs", &[&"pack", &dir, &"-o", &bundle])),
            id
        );
        assert_eq!(ok_stdout(&run("task-defs", &[&"hash", &bundle])), id);
        let out = s.path(name);
        assert_eq!(
            ok_stdout(&run(
                "task-defs",
                &[&"unpack", &bundle, &"-o", &out, &"--expect", &id.trim()]
            )),
            id
        );
        assert_eq!(ok_stdout(&run("task-defs", &[&"hash", &out])), id);
        // Packing the unpacked copy gives the same bytes: bundles are deterministic.
        let again = s.path(&format!("{name}-again.tar"));
        ok_stdout(&run("task-defs", &[&"pack", &out, &"-o", &again]));
        assert_eq!(
            std::fs::read(&bundle).unwrap(),
            std::fs::read(&again).unwrap()
        );
    }
}
