//! Sweep configuration in stages: `SweepFile` (serde mirror) → `Sweep` (validated) → `Vec<RunSpec>`.
//!
//! # The sweep file
//!
//! ```toml
//! name = "cartpole-ppo"          # required; [A-Za-z0-9._-]; results go to results/<name> by default
//! # results_dir = "results/x"    # optional; a relative path is relative to the WORKING directory,
//! #                              # not the file's folder (as it always was: existing results stay found)
//! # max_parallel = 3             # optional; default: number of cores; `drover run -j N` wins
//! # plugin_path = ["/opt/drover-plugins"]   # extra plugin search dirs, searched first; a relative
//! #                              # entry is relative to this file's folder
//!
//! [run]                          # base config of every run; every key below is known, others are errors
//! env = "CartPole-v1"            # required: CartPole-v1, or a sequence task SeqReverse-v0 | SeqSort-v0 | SeqAdd-v0
//! plugin = "ppo"                 # required: a name, or a path (contains `/` or ends in `.so`); a relative
//! #                              # path (here or in `sweep.grid`/`sweep.cases`) is relative to this file's folder
//! num_envs = 8                   # the rest have the defaults shown here
//! num_steps = 128
//! total_steps = 500000
//! hidden = [64, 64]
//! device = "cpu"                 # cpu | cuda | auto
//! threads = 1
//! seed = 0                       # used only when there is no `sweep.seeds`
//! lr = 2.5e-4
//! anneal_lr = true
//! adam_eps = 1e-5
//! max_grad_norm = 0.5
//! update_epochs = 4
//! num_minibatches = 4
//! success_return = 475.0
//! stop_at_success = false
//! # reference_policy = "initial" # none | initial: the frozen initial policy gives plugins `logp_ref` (GRPO's KL)
//! # Sequence tasks only (defaults shown); num_steps must equal the response length:
//! # group_size = 8               # responses per prompt; divides num_envs / ranks
//! # vocab = 8                    # tokens
//! # prompt_len = 3               # response length = prompt_len (reverse, sort), prompt_len / 2 + 1 (add)
//! # expert_per_group = 0         # last N responses of each group are the teacher-forced answer (CHORD); < group_size
//! # dataset_size = 1024          # an example, no default: absent = fresh prompts every rollout; set = a fixed dataset
//! #                              # of this many prompts, seeded order, epoch after epoch; num_envs / group_size..=2^24
//! # max_gen_batches = 1          # most generation batches per iteration (DAPO's dynamic sampling): the job generates
//! #                              # until `keep_group` accepted enough groups to fill the batch; 1..=1000
//!
//! [params]                       # free-form; passed to the plugin verbatim, which validates it
//! gamma = 0.99
//!
//! [sweep]
//! seeds = [1, 2, 3]              # or { count = 3, start = 1 } (start defaults to 0)
//! [sweep.grid]                   # cartesian product; keys are `run.<known key>` or `params.<any>`
//! "params.clip_coef" = [0.1, 0.2]
//! [[sweep.cases]]                # explicit list of cases, each combined with grid × seeds
//! "params.ent_coef" = 0.0
//! ```
//!
//! Runs = cases (one empty case when there is no `sweep.cases`) × grid product × seeds.
//! A key may not be both a grid axis and set in a case, and `run.seed` may not be an axis
//! (use `sweep.seeds`). Values of `run.*` axes are type-checked against the `[run]` schema.
//!
//! # Overrides, lowest to highest precedence
//!
//! 1. the TOML file;
//! 2. environment variables `DROVER_<SECTION>__<KEY>`, the double underscore separating levels:
//!    `DROVER_RUN__NUM_ENVS=16` sets `run.num_envs`, `DROVER_MAX_PARALLEL=4` sets `max_parallel`.
//!    Values parse as `--set` values do, as one TOML value (`DROVER_RUN__LR=1e-3`,
//!    `DROVER_SWEEP__SEEDS=[1,2]`), else as text (`DROVER_RUN__ENV=Acrobot-v1`). Only `DROVER_NAME`,
//!    `DROVER_RESULTS_DIR`, `DROVER_MAX_PARALLEL`, `DROVER_BACKEND` and
//!    `DROVER_{RUN,PARAMS,SWEEP,LOCAL,SLURM}__*` are read, and a table whole
//!    (`DROVER_PARAMS='{gamma = 0.9}'`, as `--set 'params={..}'`); other `DROVER_*` variables
//!    (`DROVER_PLUGIN_PATH`, `DROVER_JOB_BIN`, ...) belong to the runtime, and one spelled like a
//!    setting that nothing reads (`DROVER_RUN_LR`, `DROVER_GAMMA`, `DROVER_JOBS`) is refused
//!    with the name meant. Grid axes have dots in their names, which env var names cannot hold:
//!    use `--set sweep.grid.params.x=[..]` or `DROVER_SWEEP__GRID='{"params.x" = [..]}'`;
//! 3. `--set key=value`, the value parsed as TOML (`--set run.lr=1e-3`, `--set sweep.seeds=[1,2]`,
//!    `--set 'sweep.grid.params.clip_coef=[0.1,0.3]'`); a bare word that is not TOML is taken as a
//!    string (`--set run.env=Acrobot-v1`). After `sweep.grid.` the whole rest is the axis name.
//!
//! An override replaces the value at its key whole, a table as much as a number: `--set
//! 'sweep.grid={}'` (or `DROVER_SWEEP__GRID={}`) runs no grid, `--set 'sweep.grid={"params.x"=[1,2]}'`
//! makes `params.x` the only axis, `--set 'sweep.seeds={count=3}'` starts at 0 whatever the file's
//! `start`, and `--set 'sweep.cases=[]'` runs no cases (`cases = []` is no cases, as an empty grid
//! is no axes). To change one entry and keep the rest, name it: `--set sweep.grid.params.x=[1,2]`
//! replaces or adds that axis alone. Among overrides the later wins (every `DROVER_*` variable
//! comes before the first `--set`), whichever of the two keys is the deeper.
//!
//! # Relative paths
//!
//! A relative `plugin_path` entry or `run.plugin` path written in the file is relative to the
//! file's folder (`config::PathBases`, filled by `load_str` from figment's record of the source of
//! each value); one given by `--set` or a `DROVER_*` variable is relative to the working
//! directory. Absolute paths are untouched, and `results_dir` (and `--results`) stays relative to
//! the working directory. A plugin path enters run ids as written: it is resolved when the sweep
//! is planned (`plan`), so moving a sweep file does not change its ids.
//!
//! # Messages
//!
//! Keys are spelled `a.b[0].c` (a list index in brackets) and types in plain words ("a whole
//! number from 0 to 4294967295", "a number", "a list", "a table", "true or false", "text"),
//! whichever check refused the value (`config::messages`).
//!
//! # Ids
//!
//! `RunId` / `ConfigId`: first 16 hex digits of SHA-256 over the canonical JSON (sorted keys, no
//! whitespace) of `{"params": .., "plugin": .., "run": ..}` with and without `run.seed`
//! (docs/design/results-layout.md). Values are normalized through the typed schema first, so
//! `lr = 1` and `lr = 1.0` give the same id, and a default spelled out (`group_size = 8` for a
//! sequence task, `reference_policy = "none"`, `max_gen_batches = 1`) gives the id of leaving it out
//! (`sweep::canonical_run`).

mod expand;
mod file;
mod ids;
mod load;
mod messages;
mod plugin;
#[cfg(test)]
mod proptests;
mod sweep;
#[cfg(test)]
mod tests;

pub use expand::RunSpec;
pub use file::{Device, EnvKind, PathBases, ReferencePolicy, RunConfig, SeedsFile, SweepAxesFile, SweepFile};
pub use ids::{canonical_json, ConfigId, RunId};
pub use load::{environment, load, load_str, override_list, override_origin, parse_set, SetArg};
pub(crate) use load::{is_sweep_variable, RUNTIME_VARIABLES};
pub use plugin::PluginSearch;
pub(crate) use plugin::{file_names_of_plugin, search_folder_problem};
pub use sweep::{AxisKey, PluginRef, Sweep, MAX_RUNS};
pub(crate) use messages::{closest, misplaced_key_hint, suggest_key, unquoted_dotted_key};
pub(crate) use sweep::{canonical_run_table, check_path_text, is_plugin_path};
