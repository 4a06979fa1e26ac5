//! sbatch's options (22.05's `man sbatch`) and its input environment variables, read the way
//! sbatch reads them: a `#SBATCH` word of grouped short options (`-HJx`: `--hold`, then
//! `--job-name=x`) and a long option's unambiguous prefix (`--j=x`: `--job-name=x`) both
//! count. Two questions need this: whether `slurm.extra` gives an option drover's batch
//! script sets itself (`slurm_config`), and which `SBATCH_*` variables would override an
//! option the script sets (`slurm_cmd`, which runs sbatch without them).

/// Every sbatch option: long name (without `--`), short letter, and whether the short form
/// takes an argument (the rest of its word, or the next word). An option sbatch has and this
/// table lacks (a newer release's) is unknown here: `slurm.extra` lets it through.
const OPTIONS: &[(&str, Option<char>, bool)] = &[
    ("account", Some('A'), true),
    ("acctg-freq", None, true),
    ("array", Some('a'), true),
    ("batch", None, true),
    ("bb", None, true),
    ("bbf", None, true),
    ("begin", Some('b'), true),
    ("chdir", Some('D'), true),
    ("cluster-constraint", None, true),
    ("clusters", Some('M'), true),
    ("comment", None, true),
    ("constraint", Some('C'), true),
    ("container", None, true),
    ("contiguous", None, false),
    ("core-spec", Some('S'), true),
    ("cores-per-socket", None, true),
    ("cpu-freq", None, true),
    ("cpus-per-gpu", None, true),
    ("cpus-per-task", Some('c'), true),
    ("deadline", None, true),
    ("delay-boot", None, true),
    ("dependency", Some('d'), true),
    ("distribution", Some('m'), true),
    ("error", Some('e'), true),
    ("exclude", Some('x'), true),
    ("exclusive", None, false),
    ("export", None, true),
    ("export-file", None, true),
    ("extra-node-info", Some('B'), true),
    ("get-user-env", None, false),
    ("gid", None, true),
    ("gpu-bind", None, true),
    ("gpu-freq", None, true),
    ("gpus", Some('G'), true),
    ("gpus-per-node", None, true),
    ("gpus-per-socket", None, true),
    ("gpus-per-task", None, true),
    ("gres", None, true),
    ("gres-flags", None, true),
    ("help", Some('h'), false),
    ("hint", None, true),
    ("hold", Some('H'), false),
    ("ignore-pbs", None, false),
    ("input", Some('i'), true),
    ("job-name", Some('J'), true),
    ("kill-on-invalid-dep", None, true),
    ("licenses", Some('L'), true),
    ("mail-type", None, true),
    ("mail-user", None, true),
    ("mcs-label", None, true),
    ("mem", None, true),
    ("mem-bind", None, true),
    ("mem-per-cpu", None, true),
    ("mem-per-gpu", None, true),
    ("mincpus", None, true),
    ("network", None, true),
    ("nice", None, false),
    ("no-kill", Some('k'), false),
    ("no-requeue", None, false),
    ("nodefile", Some('F'), true),
    ("nodelist", Some('w'), true),
    ("nodes", Some('N'), true),
    ("ntasks", Some('n'), true),
    ("ntasks-per-core", None, true),
    ("ntasks-per-gpu", None, true),
    ("ntasks-per-node", None, true),
    ("ntasks-per-socket", None, true),
    ("open-mode", None, true),
    ("output", Some('o'), true),
    ("overcommit", Some('O'), false),
    ("oversubscribe", Some('s'), false),
    ("parsable", None, false),
    ("partition", Some('p'), true),
    ("power", None, true),
    ("prefer", None, true),
    ("priority", None, true),
    ("profile", None, true),
    ("propagate", None, false),
    ("qos", Some('q'), true),
    ("quiet", Some('Q'), false),
    ("reboot", None, false),
    ("requeue", None, false),
    ("reservation", None, true),
    ("signal", None, true),
    ("sockets-per-node", None, true),
    ("spread-job", None, false),
    ("switches", None, true),
    ("test-only", None, false),
    ("thread-spec", None, true),
    ("threads-per-core", None, true),
    ("time", Some('t'), true),
    ("time-min", None, true),
    ("tmp", None, true),
    ("uid", None, true),
    ("usage", None, false),
    ("use-min-nodes", None, false),
    ("verbose", Some('v'), false),
    ("version", Some('V'), false),
    ("wait", Some('W'), false),
    ("wait-all-nodes", None, true),
    ("wckey", None, true),
    ("wrap", None, true),
];

/// What one word of a `#SBATCH` line names, as sbatch's option parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// An option, by its long name (`job-name`).
    Option(&'static str),
    /// A long-option prefix several options share (`--co`): sbatch refuses it.
    Ambiguous(Vec<&'static str>),
}

/// The options one word names: nothing for a word that is not an option (a value, `--`), the
/// letters of a short-option group up to the first that takes an argument (the rest of the
/// word is that argument: `-Ho/x` is `--hold --output=/x`), or the long option a `--name` or
/// `--name=value` spells in full or abbreviates without ambiguity. Unknown letters and names
/// are left out: sbatch refuses them itself.
pub fn options_in(word: &str) -> Vec<Named> {
    if let Some(long) = word.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        if name.is_empty() {
            return Vec::new();
        }
        if let Some(&(exact, ..)) = OPTIONS.iter().find(|(l, ..)| *l == name) {
            return vec![Named::Option(exact)];
        }
        let candidates: Vec<&'static str> = OPTIONS.iter().map(|(l, ..)| *l).filter(|l| l.starts_with(name)).collect();
        return match candidates.as_slice() {
            [] => Vec::new(),
            [one] => vec![Named::Option(one)],
            _ => vec![Named::Ambiguous(candidates)],
        };
    }
    let Some(letters) = word.strip_prefix('-') else { return Vec::new() };
    let mut named = Vec::new();
    for c in letters.chars() {
        let Some(&(long, _, takes_arg)) = OPTIONS.iter().find(|(_, s, _)| *s == Some(c)) else { break };
        named.push(Named::Option(long));
        if takes_arg {
            break;
        }
    }
    named
}

/// The long names of the options a batch script's `#SBATCH` lines set, read as sbatch reads
/// them: only the lines before the first command (a later `#SBATCH` is a comment to it).
pub fn script_options(script: &str) -> Vec<&'static str> {
    let mut set = Vec::new();
    for line in script.lines().skip_while(|l| l.starts_with("#!")) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(rest) = line.strip_prefix('#') else { break };
        let Some(words) = rest.strip_prefix("SBATCH") else { continue };
        for word in words.split_whitespace() {
            for named in options_in(word) {
                if let Named::Option(long) = named {
                    if !set.contains(&long) {
                        set.push(long);
                    }
                }
            }
        }
    }
    set
}

/// The sbatch options of drover's batch script (`slurm_template.sbatch`) and of its own
/// `sbatch` call (long names: `sbatch_options` reads the short and abbreviated spellings),
/// which `extra` may not give. `clusters`: another cluster's queue is one drover's `squeue`
/// never reads; `wait`: sbatch would wait for the array to end, past drover's timeout.
/// `slurm_cmd` runs sbatch without the input variables of these, and `slurm_config` refuses
/// them in `slurm.extra`: one list for both.
pub const DROVERS_OWN: [&str; 14] =
    ["clusters", "job-name", "comment", "array", "output", "error", "open-mode", "requeue", "no-requeue", "signal", "dependency", "chdir", "parsable", "wait"];

/// sbatch's input variables that set an option (22.05's INPUT ENVIRONMENT VARIABLES), with
/// the options each stands for. The memory and GPU-count ones are listed with every option of
/// their family: given beside the script's `--mem`, an `SBATCH_MEM_PER_CPU` would replace the
/// sweep's request by another kind, not add to it.
pub const OPTION_VARIABLES: &[(&str, &[&str])] = &[
    ("SBATCH_ACCOUNT", &["account"]),
    ("SBATCH_ACCTG_FREQ", &["acctg-freq"]),
    ("SBATCH_ARRAY_INX", &["array"]),
    ("SBATCH_BATCH", &["batch"]),
    ("SBATCH_CLUSTERS", &["clusters"]),
    ("SLURM_CLUSTERS", &["clusters"]),
    ("SBATCH_CONSTRAINT", &["constraint"]),
    ("SBATCH_CONTAINER", &["container"]),
    ("SBATCH_CORE_SPEC", &["core-spec"]),
    ("SBATCH_CPUS_PER_GPU", &["cpus-per-gpu"]),
    ("SBATCH_DELAY_BOOT", &["delay-boot"]),
    ("SBATCH_DISTRIBUTION", &["distribution"]),
    ("SBATCH_ERROR", &["error"]),
    ("SBATCH_EXCLUSIVE", &["exclusive"]),
    ("SBATCH_EXPORT", &["export"]),
    ("SBATCH_GET_USER_ENV", &["get-user-env"]),
    ("SBATCH_GPU_BIND", &["gpu-bind"]),
    ("SBATCH_GPU_FREQ", &["gpu-freq"]),
    ("SBATCH_GPUS", &["gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"]),
    ("SBATCH_GPUS_PER_NODE", &["gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"]),
    ("SBATCH_GPUS_PER_TASK", &["gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket"]),
    ("SBATCH_GRES", &["gres"]),
    ("SBATCH_GRES_FLAGS", &["gres-flags"]),
    ("SBATCH_HINT", &["hint"]),
    ("SLURM_HINT", &["hint"]),
    ("SBATCH_INPUT", &["input"]),
    ("SBATCH_JOB_NAME", &["job-name"]),
    ("SBATCH_MEM_BIND", &["mem-bind"]),
    ("SBATCH_MEM_PER_CPU", &["mem", "mem-per-cpu", "mem-per-gpu"]),
    ("SBATCH_MEM_PER_GPU", &["mem", "mem-per-cpu", "mem-per-gpu"]),
    ("SBATCH_MEM_PER_NODE", &["mem", "mem-per-cpu", "mem-per-gpu"]),
    ("SBATCH_NETWORK", &["network"]),
    ("SBATCH_NO_KILL", &["no-kill"]),
    ("SBATCH_NO_REQUEUE", &["no-requeue", "requeue"]),
    ("SBATCH_OPEN_MODE", &["open-mode"]),
    ("SBATCH_OUTPUT", &["output"]),
    ("SBATCH_OVERCOMMIT", &["overcommit"]),
    ("SBATCH_PARTITION", &["partition"]),
    ("SBATCH_POWER", &["power"]),
    ("SBATCH_PROFILE", &["profile"]),
    ("SBATCH_QOS", &["qos"]),
    ("SBATCH_REQ_SWITCH", &["switches"]),
    ("SBATCH_REQUEUE", &["requeue", "no-requeue"]),
    ("SBATCH_RESERVATION", &["reservation"]),
    ("SBATCH_SIGNAL", &["signal"]),
    ("SBATCH_SPREAD_JOB", &["spread-job"]),
    ("SBATCH_THREAD_SPEC", &["thread-spec"]),
    ("SBATCH_THREADS_PER_CORE", &["threads-per-core"]),
    ("SBATCH_TIMELIMIT", &["time"]),
    ("SBATCH_USE_MIN_NODES", &["use-min-nodes"]),
    ("SBATCH_WAIT", &["wait"]),
    ("SBATCH_WAIT_ALL_NODES", &["wait-all-nodes"]),
    ("SBATCH_WAIT4SWITCH", &["switches"]),
    ("SBATCH_WCKEY", &["wckey"]),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// sbatch reads a short-option group letter by letter up to the first letter that takes
    /// an argument, and a long option's unambiguous prefix as the option: `-HJx` names the
    /// job, `--j=x` too, `-Ho/path` moves the output.
    #[test]
    fn words_name_the_options_sbatch_reads_in_them() {
        let opt = |names: &[&'static str]| names.iter().map(|n| Named::Option(n)).collect::<Vec<_>>();
        for (word, expect) in [
            ("-J", opt(&["job-name"])),
            ("-Jx", opt(&["job-name"])),
            ("-HJx", opt(&["hold", "job-name"])),
            ("-vJx", opt(&["verbose", "job-name"])),
            ("-Ho/path", opt(&["hold", "output"])),
            // `p` takes an argument: `Jx` is the partition's name, not an option.
            ("-pJx", opt(&["partition"])),
            ("-vvH", opt(&["verbose", "verbose", "hold"])),
            ("--job-name=x", opt(&["job-name"])),
            ("--j=x", opt(&["job-name"])),
            ("--jo", opt(&["job-name"])),
            ("--arr=1", opt(&["array"])),
            ("--out=o", opt(&["output"])),
            ("--mem=4G", opt(&["mem"])),
            ("--part=gpu", opt(&["partition"])),
            ("--job-name-is-not-this", vec![]),
            ("--", vec![]),
            ("gpu", vec![]),
            ("-", vec![]),
            ("-%", vec![]),
        ] {
            assert_eq!(options_in(word), expect, "{word}");
        }
        assert!(matches!(&options_in("--co")[..], [Named::Ambiguous(c)] if c.contains(&"comment") && c.contains(&"constraint")));
        assert!(matches!(&options_in("--mem-per")[..], [Named::Ambiguous(c)] if c.len() == 2));
    }

    #[test]
    fn a_scripts_options_are_its_sbatch_lines_before_the_first_command() {
        let script = "#!/bin/bash\n# a comment\n#SBATCH --job-name=x\n#SBATCH -p gpu --mem=4G\n\n#SBATCH -HJy\nset -u\n#SBATCH --qos=late\n";
        assert_eq!(script_options(script), ["job-name", "partition", "mem", "hold"]);
    }
}
