//! `Plugin`: a loaded, version-checked plugin library and its description.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use drover_plugin_api::{
    ext::{v1_1, v1_3, ExtensionTable},
    AlgorithmMod_Ref, InterfaceVersion, ParamKind, INTERFACE_VERSION, VERSION_SYMBOL,
};
use sha2::{Digest, Sha256};

use crate::{
    error::{CallError, CallErrorKind, LoadError},
    handle::AlgorithmHandle,
};

/// One parameter a plugin accepts (host-side copy of `drover_plugin_api::ParamSpec`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    /// JSON key.
    pub name: String,
    /// `float`, `int`, `bool`, `string`, or `unknown` for a kind newer than this host.
    pub kind: &'static str,
    /// Default as JSON text (`null`: optional).
    pub default: String,
    /// Documentation.
    pub doc: String,
    /// Inclusive lower bound.
    pub min: Option<f64>,
    /// Inclusive upper bound.
    pub max: Option<f64>,
}

/// What a plugin says about itself (host-side copy of `drover_plugin_api::PluginInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Short name, e.g. `ppo`.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Its parameters.
    pub params: Vec<ParamInfo>,
}

impl PluginInfo {
    fn from_abi(info: drover_plugin_api::PluginInfo) -> Self {
        let params = info
            .params
            .iter()
            .map(|p| ParamInfo {
                name: p.name.to_string(),
                kind: p.kind().map_or("unknown", ParamKind::name),
                default: p.default.to_string(),
                doc: p.doc.to_string(),
                min: p.min.into_option(),
                max: p.max.into_option(),
            })
            .collect();
        Self {
            name: info.name.into_string(),
            version: info.version.into_string(),
            description: info.description.into_string(),
            params,
        }
    }
}

/// The sequence-level loss extension (interface 1.1) of one loaded plugin, from
/// [`Plugin::sequence_loss`]. Valid for the process lifetime (libraries are never unloaded).
#[derive(Clone, Copy)]
pub struct SequenceLoss {
    pub(crate) table: &'static v1_1::SequenceLoss,
}

impl std::fmt::Debug for SequenceLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SequenceLoss")
    }
}

/// The plugin-state extension (interface 1.3) of one loaded plugin, from
/// [`Plugin::plugin_state`]: call [`AlgorithmHandle::save_state`] and
/// [`AlgorithmHandle::load_state`] with it. Valid for the process lifetime.
#[derive(Clone, Copy)]
pub struct PluginState {
    pub(crate) table: &'static v1_3::PluginState,
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginState")
    }
}

/// A loaded algorithm plugin. Libraries are never unloaded (abi_stable's model: objects and
/// error vtables may point into them), so `Plugin` can be dropped while instances live.
pub struct Plugin {
    path: PathBuf,
    module: AlgorithmMod_Ref,
    info: PluginInfo,
    interface_version: InterfaceVersion,
    sha256: String,
    /// The 1.3 minibatch-context table, looked up (and its layout checked) at load: every
    /// instance's loss calls use it.
    context_table: Option<&'static v1_3::MinibatchContext>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("interface_version", &self.interface_version)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// How much of abi_stable's report a [`LoadError::Layout`] message shows.
pub(crate) const REPORT_EXCERPT_CHARS: usize = 300;

/// `text` on one line, cut after `max` characters with "…"; whether it was cut.
fn one_line(text: &str, max: usize) -> (String, bool) {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => (format!("{}…", &line[..at]), true),
        None => (line, false),
    }
}

/// `report` on one line, cut after `max` characters with "…" and the length it had.
pub(crate) fn cut_report(report: &str, max: usize) -> String {
    match one_line(report, max) {
        (cut, true) => format!(
            "{cut} ({} characters in all; `RUST_LOG=debug drover-job plugin info <file>` prints them whole)",
            report.chars().count()
        ),
        (whole, false) => whole,
    }
}

/// The gist of an abi_stable layout report: each `Error:` entry as "`Type`: what (expected E,
/// found F)", joined with "; ". The type is that of the last layout printed before the entry (the type the entry is about, or the root module when abi_stable printed no
/// nested layout); expected and found values are put on one line and cut, as some are whole
/// layouts.
pub(crate) fn layout_mismatches(report: &str) -> String {
    #[derive(PartialEq)]
    enum In {
        Nothing,
        Expected,
        Found,
    }
    struct Entry {
        ty: String,
        what: String,
        expected: Vec<String>,
        found: Vec<String>,
    }
    let mut entries: Vec<Entry> = Vec::new();
    let (mut ty, mut within, mut header) = (String::new(), In::Nothing, false);
    for line in report.lines().map(str::trim) {
        if line == "--- Type Layout ---" {
            header = true;
        } else if let Some(what) = line.strip_prefix("Error:") {
            entries.push(Entry { ty: ty.clone(), what: what.trim().to_owned(), expected: Vec::new(), found: Vec::new() });
            within = In::Nothing;
        } else if line == "Expected:" && !entries.is_empty() {
            within = In::Expected;
        } else if line == "Found:" && within == In::Expected {
            within = In::Found;
        } else if line.is_empty() || line.starts_with("Extra:") || line.ends_with("error(s)") {
            within = In::Nothing;
        } else if let (Some(entry), false) = (entries.last_mut(), within == In::Nothing) {
            let values = if within == In::Expected { &mut entry.expected } else { &mut entry.found };
            values.push(line.to_owned());
        } else if let (Some(name), true) = (line.strip_prefix("type:"), header) {
            // A layout's own type comes right below its header; its fields' types follow.
            ty = name.trim().to_owned();
            header = false;
        }
    }
    if entries.is_empty() {
        return "abi_stable found a difference it did not name".to_owned();
    }
    let value = |v: &[String]| one_line(&v.join(" "), 60).0;
    entries
        .iter()
        .map(|e| {
            let at = if e.ty.is_empty() { String::new() } else { format!("`{}`: ", e.ty) };
            format!("{at}{} (expected {}, found {})", e.what, value(&e.expected), value(&e.found))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn render(e: &LibraryError) -> String {
    // abi_stable's messages span several indented lines; keep them on one.
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why `bytes` cannot be a loadable shared library, if that can be told from its ELF frame:
/// the magic number, the object type, and (for 64-bit little-endian files, the platforms drover
/// builds for) whether the program headers, every loaded segment and the section headers lie
/// inside the file. `None` leaves the verdict to the dynamic loader.
pub(crate) fn elf_problem(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Some(format!(
            "not a shared library: {} bytes without an ELF header (truncated, or not a compiled plugin?)",
            bytes.len()
        ));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return None;
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?)) };
    let len = bytes.len() as u64;
    let e_type = u16_at(16);
    if e_type != 3 {
        return Some(format!("an ELF file of type {e_type}, not a shared library (type 3)"));
    }
    // glibc reports a library of another architecture as "No such file or directory".
    let e_machine = u16_at(18);
    if let Some(here) = THIS_MACHINE.filter(|&(m, _)| m != e_machine) {
        return Some(format!(
            "built for {}, but this drover-job runs on {}: use a build of the plugin for this machine",
            machine_name(e_machine),
            here.1
        ));
    }
    let truncated = |what: String, end: u64| format!("truncated: {what} ends at byte {end} but the file has {len} bytes");
    let (phoff, phentsize, phnum) = (u64_at(32)?, u64::from(u16_at(54)), u64::from(u16_at(56)));
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > len || phentsize < 56 {
        return Some(truncated("the program header table".into(), ph_end));
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        let p_type = u32::from_le_bytes(bytes[at..at + 4].try_into().ok()?);
        if p_type == 1 {
            let end = u64_at(at + 8)?.saturating_add(u64_at(at + 32)?);
            if end > len {
                return Some(truncated(format!("loadable segment {i}"), end));
            }
        }
    }
    let (shoff, shentsize, shnum) = (u64_at(40)?, u64::from(u16_at(58)), u64::from(u16_at(60)));
    let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    if shoff != 0 && sh_end > len {
        return Some(truncated("the section header table".into(), sh_end));
    }
    None
}

/// This build's ELF `e_machine` and architecture name, where drover knows it.
const THIS_MACHINE: Option<(u16, &str)> = if cfg!(target_arch = "x86_64") {
    Some((62, "x86_64"))
} else if cfg!(target_arch = "aarch64") {
    Some((183, "aarch64"))
} else {
    None
};

/// An ELF `e_machine` in words.
fn machine_name(e_machine: u16) -> String {
    match e_machine {
        62 => "x86_64".into(),
        183 => "aarch64".into(),
        243 => "riscv64".into(),
        21 => "ppc64".into(),
        other => format!("ELF machine {other}"),
    }
}

/// The plugin's description, once its parameter declarations are checked: a default outside
/// its own range would otherwise surface as an error in the user's params.
fn checked_info(path: &Path, info: drover_plugin_api::PluginInfo) -> Result<PluginInfo, LoadError> {
    match info.check_params() {
        Ok(()) => Ok(PluginInfo::from_abi(info)),
        Err(reason) => Err(LoadError::Params {
            path: path.to_path_buf(),
            name: info.name.into_string(),
            reason,
        }),
    }
}

impl Plugin {
    /// Loads the plugin at `path`: hashes the file, checks that it is a whole shared library
    /// (`elf_problem`), checks drover's interface version (so a
    /// mismatch is reported with both versions), then abi_stable's version and layout checks,
    /// and finally asks the plugin for its info and checks its parameter declarations.
    ///
    /// # Errors
    /// A [`LoadError`] naming `path` and the reason.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();

        // dlopen maps the file and trusts its headers: a truncated library dies of SIGBUS
        // inside the loader instead of failing, and a text file gives a terse "invalid ELF
        // header". Checking the frame first turns both into a reason naming the file.
        if let Some(reason) = elf_problem(&bytes) {
            return Err(LoadError::Open { path, reason });
        }
        let raw = RawLibrary::load_at(&path).map_err(|e| LoadError::Open {
            path: path.clone(),
            reason: render(&e),
        })?;
        let symbol = format!("{VERSION_SYMBOL}\0");
        // SAFETY: `export_algorithm!` defines this symbol as `extern "C" fn() -> u64`; a library
        // exporting the name with another type is not a drover plugin and is outside our contract.
        let version_fn =
            unsafe { raw.get::<extern "C" fn() -> u64>(symbol.as_bytes()) }.map_err(|_| {
                LoadError::NotAPlugin {
                    path: path.clone(),
                    symbol: VERSION_SYMBOL,
                }
            })?;
        let plugin_version = InterfaceVersion::from_bits(version_fn());
        if !INTERFACE_VERSION.can_load(plugin_version) {
            let rule = format!(
                "it loads plugins built against any interface {}.x: rebuild the plugin against \
                 a drover-plugin-api of that major",
                INTERFACE_VERSION.major
            );
            return Err(LoadError::IncompatibleInterface {
                path,
                plugin: plugin_version,
                host: INTERFACE_VERSION,
                rule,
            });
        }

        // SAFETY: `lib_header_from_raw_library` reads abi_stable's own header symbol, whose type
        // abi_stable checks itself (`InvalidAbiHeader`) before trusting anything else.
        let header = unsafe { lib_header_from_raw_library(&raw) }.map_err(|e| LoadError::Abi {
            path: path.clone(),
            reason: match &e {
                LibraryError::GetSymbolError { .. } => format!(
                    "it exports `{VERSION_SYMBOL}` but no root module (abi_stable's library \
                     header is missing; `export_algorithm!` writes both): {}",
                    render(&e)
                ),
                _ => render(&e),
            },
        })?;
        let module = header
            .init_root_module::<AlgorithmMod_Ref>()
            .map_err(|e| match &e {
                // Kilobytes of layouts on one line buried the one difference that matters.
                LibraryError::AbiInstability(_) => {
                    let report = e.to_string();
                    LoadError::Layout {
                        path: path.clone(),
                        plugin: plugin_version,
                        host: INTERFACE_VERSION,
                        mismatches: layout_mismatches(&report),
                        report,
                    }
                }
                _ => LoadError::Abi {
                    path: path.clone(),
                    reason: render(&e),
                },
            })?;
        // Never unload: the module, trait objects and their vtables live in the library.
        std::mem::forget(raw);

        let info = match (module.info())() {
            abi_stable::std_types::RResult::ROk(info) => checked_info(&path, info)?,
            abi_stable::std_types::RResult::RErr(source) => {
                return Err(LoadError::Info { path, source })
            }
        };
        let mut plugin = Self {
            path,
            module,
            info,
            interface_version: plugin_version,
            sha256,
            context_table: None,
        };
        // Every 1.3+ plugin exports it, so a table of another layout is a broken plugin: refuse
        // it now, naming the extension, rather than after the first rollout.
        plugin.context_table = plugin.extension::<v1_3::MinibatchContext>()?;
        Ok(plugin)
    }

    /// The path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name, version, description, parameters.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The interface version the plugin was built against.
    pub fn interface_version(&self) -> InterfaceVersion {
        self.interface_version
    }

    /// Looks up extension table `E` (see `drover_plugin_api::ext`).
    ///
    /// `Ok(None)` when the plugin does not provide it, e.g. because it was built against an
    /// interface minor older than `E::SINCE`: the caller degrades (or fails the run with its
    /// own message if it needs the feature). The plugin's table is used only after abi_stable
    /// has found its layout compatible with this host's.
    ///
    /// # Errors
    /// [`LoadError::Extension`] naming the extension and both interface versions when the
    /// plugin's table has another layout.
    pub fn extension<E: ExtensionTable>(&self) -> Result<Option<&'static E>, LoadError> {
        let found = match (self.module.extension())(E::NAME.into()) {
            abi_stable::std_types::ROption::RSome(found) => found,
            abi_stable::std_types::ROption::RNone => return Ok(None),
        };
        found
            .get::<E>()
            .map(Some)
            .map_err(|reason| LoadError::Extension {
                path: self.path.clone(),
                name: E::NAME,
                since: E::SINCE,
                plugin: self.interface_version,
                host: INTERFACE_VERSION,
                reason,
            })
    }

    /// The interface 1.1 sequence-level loss, if the plugin provides it; call it with
    /// [`AlgorithmHandle::sequence_loss`].
    ///
    /// # Errors
    /// As [`Plugin::extension`].
    pub fn sequence_loss(&self) -> Result<Option<SequenceLoss>, LoadError> {
        Ok(self
            .extension::<v1_1::SequenceLoss>()?
            .map(|table| SequenceLoss { table }))
    }

    /// The interface 1.3 plugin-state table, if the plugin provides it: `Ok(None)` for a
    /// plugin that keeps no state across iterations, and for every plugin built against 1.0,
    /// 1.1 or 1.2 (they load and run as before; a resumed run starts them fresh).
    ///
    /// # Errors
    /// As [`Plugin::extension`].
    pub fn plugin_state(&self) -> Result<Option<PluginState>, LoadError> {
        Ok(self
            .extension::<v1_3::PluginState>()?
            .map(|table| PluginState { table }))
    }

    /// Lowercase hex SHA-256 of the library file as read at load time.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file name of the plugin library for `crate_name` on this platform, e.g.
    /// `libdrover_plugin_ppo.so`.
    pub fn library_file_name(crate_name: &str) -> String {
        format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            crate_name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        )
    }

    fn call_error(&self, call: &'static str, kind: CallErrorKind) -> CallError {
        CallError {
            plugin: self.info.name.clone(),
            version: self.info.version.clone(),
            call,
            kind,
        }
    }

    /// Validates `params_json` and returns it with defaults filled in (canonical JSON).
    ///
    /// # Errors
    /// A [`CallError`] for call `resolve_params`, e.g. an unknown key.
    pub fn resolve_params(&self, params_json: &str) -> Result<serde_json::Value, CallError> {
        match (self.module.resolve_params())(params_json.into()) {
            abi_stable::std_types::RResult::ROk(text) => serde_json::from_str(text.as_str())
                .map_err(|e| {
                    self.call_error(
                        "resolve_params",
                        CallErrorKind::MalformedJson(e.to_string()),
                    )
                }),
            abi_stable::std_types::RResult::RErr(e) => {
                Err(self.call_error("resolve_params", CallErrorKind::Plugin(Box::new(e))))
            }
        }
    }

    /// Creates an algorithm instance from a params JSON object (spec.json's `params`) and a seed.
    ///
    /// # Errors
    /// A [`CallError`] for call `new`: invalid params, or the plugin's constructor failed.
    pub fn instantiate(&self, params_json: &str, seed: u64) -> Result<AlgorithmHandle, CallError> {
        match (self.module.new())(params_json.into(), seed) {
            abi_stable::std_types::RResult::ROk(inner) => Ok(AlgorithmHandle::new(
                inner,
                self.info.name.clone(),
                self.info.version.clone(),
                self.context_table,
            )),
            abi_stable::std_types::RResult::RErr(e) => {
                Err(self.call_error("new", CallErrorKind::Plugin(Box::new(e))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{checked_info, elf_problem, layout_mismatches};
    use crate::LoadError;
    use drover_plugin_api::{ParamSpec, PluginInfo, INTERFACE_VERSION};

    /// A `PluginInfo` of 4 fields, as this host has it, and one of 5, as a plugin built from a
    /// changed drover-plugin-api has it.
    mod host_side {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct PluginInfo {
            pub name: u64,
            pub version: u64,
            pub description: u64,
            pub params: u64,
        }
    }
    mod plugin_side {
        #[repr(C)]
        #[derive(abi_stable::StableAbi)]
        pub struct PluginInfo {
            pub name: u64,
            pub version: u64,
            pub description: u64,
            pub params: u64,
            pub extra: u64,
        }
    }

    /// Review finding: a layout mismatch was refused with abi_stable's whole report, ~7 KB on
    /// one line, the difference that matters at its very end.
    #[test]
    fn a_layout_mismatch_leads_with_the_versions_and_abi_stables_errors() {
        use abi_stable::{abi_stability::abi_checking::check_layout_compatibility, StableAbi};
        let genuine = check_layout_compatibility(
            <host_side::PluginInfo as StableAbi>::LAYOUT,
            <plugin_side::PluginInfo as StableAbi>::LAYOUT,
        )
        .expect_err("5 fields are not 4")
        .to_string();
        let gist = layout_mismatches(&genuine);
        assert!(gist.contains("`PluginInfo`: too many fields (expected 4, found 5)"), "{gist}\n{genuine}");

        // As `init_root_module` reports it: the root module's layout, the path to the type, both
        // layouts of the type, and only then the error.
        let layout = |ty: &str, fields: usize| {
            let mut s = format!("    --- Type Layout ---\n    type:{ty}\n    size:32 align:8\n    package:'drover-plugin-api' version:'1.3.0'\n    line:0 mod:drover_plugin_api::types\n");
            for f in 0..fields {
                s.push_str(&format!("    field{f}: RString, with a long description of its own layout {}\n", "x".repeat(60)));
            }
            s
        };
        let report = format!(
            "\nCompared <this>:\n{}\nTo <other>:\n{}\n1 error(s)inside:\n    <other>\n\n    field:info type:extern fn() -> RResult<PluginInfo, PluginError>\n\n\
             Layout of expected type:\n{}\n\nLayout of found type:\n{}\n\n\nError:too many fields\nExpected:\n    4\nFound:\n    5\n",
            layout("AlgorithmMod_Ref", 40),
            layout("AlgorithmMod_Ref", 40),
            layout("PluginInfo", 4),
            layout("PluginInfo", 5),
        );
        assert!(report.len() > 7000, "as long as the one the reviewer got: {}", report.len());
        let plugin = drover_plugin_api::InterfaceVersion { major: 1, minor: 4 };
        let e = LoadError::Layout {
            path: "/x/libdrover_plugin_awr.so".into(),
            plugin,
            host: INTERFACE_VERSION,
            mismatches: layout_mismatches(&report),
            report: report.clone(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "plugin `/x/libdrover_plugin_awr.so` was built against drover plugin interface 1.4, \
                 whose types do not have the layout this drover (interface {INTERFACE_VERSION}) expects: \
                 `PluginInfo`: too many fields (expected 4, found 5) (one of the two was built from a \
                 changed drover-plugin-api: rebuild the plugin against this drover's); abi_stable's \
                 report: Compared <this>: --- Type Layout --- type:AlgorithmMod_Ref"
            )),
            "{text}"
        );
        assert!(text.len() < 1000 && !text.contains('\n'), "{} characters: {text}", text.len());
        assert!(text.ends_with(&format!("… ({} characters in all; `RUST_LOG=debug drover-job plugin info <file>` prints them whole)", report.chars().count())), "{text}");
        assert_eq!(layout_mismatches("no entries"), "abi_stable found a difference it did not name");
    }

    /// Review finding 6: a plugin's own bad declaration was reported as an error in the user's
    /// `--params` or sweep file ("invalid `--params`: key `coef`: must be at most 1, got 2").
    #[test]
    fn a_plugin_declaring_its_params_wrongly_is_refused_naming_it_the_file_and_the_param() {
        let path = std::path::Path::new("/x/libdrover_plugin_faults.so");
        let info = |spec: ParamSpec| PluginInfo::new("faults", "0.1.0", "test").param(spec);
        let ok = checked_info(path, info(ParamSpec::float("coef", 0.5, "c").range(0.0, 1.0))).unwrap();
        assert_eq!(ok.params[0].default, "0.5");
        let e = checked_info(path, info(ParamSpec::float("coef", 2.0, "c").range(0.0, 1.0))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plugin `faults` (`/x/libdrover_plugin_faults.so`) declares its params wrongly: param \
             `coef`: default 2 is outside its own range [0, 1] (a mistake in the plugin's `info()`, \
             not in the params given to it)"
        );
    }

    #[test]
    fn text_and_truncated_libraries_are_refused_before_dlopen() {
        let text = elf_problem(b"this is not a library, just text long enough to have a header's size: 64+ bytes");
        assert!(text.as_deref().is_some_and(|r| r.contains("without an ELF header")), "{text:?}");
        // The test executable is a position-independent ELF of the same type as a plugin.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_problem(&exe), None, "a whole ELF file passes");
        let cut = elf_problem(&exe[..exe.len() / 2]);
        assert!(cut.as_deref().is_some_and(|r| r.starts_with("truncated: ")), "{cut:?}");
        let mut relocatable = exe.clone();
        relocatable[16] = 1;
        assert!(elf_problem(&relocatable).is_some_and(|r| r.contains("not a shared library")));
        // Failure-injection review D8: an AArch64 plugin on x86-64 read "No such file".
        let mut foreign = exe.clone();
        let (other, name) = if cfg!(target_arch = "aarch64") { (62u16, "x86_64") } else { (183u16, "aarch64") };
        foreign[18..20].copy_from_slice(&other.to_le_bytes());
        let why = elf_problem(&foreign);
        assert!(why.as_deref().is_some_and(|r| r.starts_with(&format!("built for {name}, but this drover-job runs on "))), "{why:?}");
    }
}
