use super::params::{self, PARAMETERS};
use super::syntax::{is_abs_path, is_alg_name, is_user_name};
use super::*;

fn one_problem(cmdline: &str) -> Problem {
    let (_, problems) = parse(cmdline);
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems[0].clone()
}

#[test]
fn split_args_follows_the_kernel() {
    assert_eq!(split_args(""), vec![]);
    assert_eq!(split_args(" \t\n"), vec![]);
    assert_eq!(
        split_args("a b=c d=e=f"),
        vec![("a", None), ("b", Some("c")), ("d", Some("e=f"))]
    );
    assert_eq!(
        split_args(r#"a="b c" d"#),
        vec![("a", Some("b c")), ("d", None)]
    );
    assert_eq!(
        split_args(r#""a=b c" d"#),
        vec![("a", Some("b c")), ("d", None)]
    );
    // Quotes inside a value group words but stay in the value.
    assert_eq!(split_args(r#"a=b"c d""#), vec![("a", Some(r#"b"c d""#))]);
    assert_eq!(split_args(r#"a=""#), vec![("a", Some(""))]);
    assert_eq!(split_args(r#"a="" b"#), vec![("a", Some("")), ("b", None)]);
    // An unterminated quote runs to the end.
    assert_eq!(split_args(r#"a="b c"#), vec![("a", Some("b c"))]);
    assert_eq!(
        split_args("a=\u{f6} \u{e9}"),
        vec![("a", Some("\u{f6}")), ("\u{e9}", None)]
    );
    // `--` ends the kernel's parameters.
    assert_eq!(split_args("a -- b=c"), vec![("a", None)]);
    assert_eq!(
        split_args("a --=x b"),
        vec![("a", None), ("--", Some("x")), ("b", None)]
    );
    // Vertical tab and form feed separate like `isspace()`.
    assert_eq!(
        split_args("a\x0bb\x0cc"),
        vec![("a", None), ("b", None), ("c", None)]
    );
}

#[test]
fn parse_size_forms() {
    assert_eq!(parse_size("1"), Some(Size::Bytes(1)));
    assert_eq!(parse_size("4096"), Some(Size::Bytes(4096)));
    assert_eq!(parse_size("2k"), Some(Size::Bytes(2048)));
    assert_eq!(parse_size("512M"), Some(Size::Bytes(512 << 20)));
    assert_eq!(parse_size("2G"), Some(Size::Bytes(2 << 30)));
    assert_eq!(parse_size("3t"), Some(Size::Bytes(3 << 40)));
    assert_eq!(parse_size("1%"), Some(Size::Percent(1)));
    assert_eq!(parse_size("100%"), Some(Size::Percent(100)));
    assert_eq!(
        parse_size("18446744073709551615"),
        Some(Size::Bytes(u64::MAX))
    );
    for bad in [
        "",
        "0",
        "0K",
        "0%",
        "101%",
        "256%",
        "%",
        "K",
        "-1",
        "+1",
        "1.5G",
        "2GB",
        "1 G",
        " 1",
        "1P",
        "18446744073709551616",
        "16777216T",
        "1e3",
        "0x10",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn size_to_bytes_and_display() {
    assert_eq!(Size::Percent(50).to_bytes(2 << 30), 1 << 30);
    assert_eq!(Size::Percent(33).to_bytes(100), 33);
    assert_eq!(Size::Percent(1).to_bytes(99), 0);
    assert_eq!(Size::Percent(100).to_bytes(u64::MAX), u64::MAX);
    assert_eq!(Size::Bytes(7).to_bytes(0), 7);
    for (size, text) in [
        (Size::Percent(50), "50%"),
        (Size::Bytes(1000), "1000"),
        (Size::Bytes(1024), "1K"),
        (Size::Bytes(1536 << 20), "1536M"),
        (Size::Bytes(2 << 40), "2T"),
    ] {
        assert_eq!(size.to_string(), text);
        assert_eq!(parse_size(text), Some(size));
    }
}

#[test]
fn device_spec_forms_round_trip() {
    let cases = [
        ("LABEL=RAMSTICK", DeviceSpec::Label("RAMSTICK".into())),
        (r#"LABEL="MY STICK""#, DeviceSpec::Label("MY STICK".into())),
        ("UUID=abcd-1234", DeviceSpec::Uuid("abcd-1234".into())),
        ("PARTUUID=0a0b-01", DeviceSpec::PartUuid("0a0b-01".into())),
        ("PARTLABEL=data", DeviceSpec::PartLabel("data".into())),
        ("/dev/vda2", DeviceSpec::Path("/dev/vda2".into())),
    ];
    for (text, spec) in cases {
        assert_eq!(parse_device_spec(text), Some(spec.clone()), "{text}");
        assert_eq!(spec.to_string(), text);
    }
    assert_eq!(
        parse_device_spec("UUID=ABCD-EF01"),
        Some(DeviceSpec::Uuid("abcd-ef01".into()))
    );
    assert_eq!(
        parse_device_spec("LABEL=A=B"),
        Some(DeviceSpec::Label("A=B".into()))
    );
    for bad in [
        "",
        "LABEL=",
        r#"LABEL="""#,
        "UUID=",
        "UUID=xyz",
        "UUID=--",
        "PARTUUID=g1",
        "label=x",
        "RAMSTICK",
        "/dev/",
        "/dev",
        "vda2",
        "ID=x",
    ] {
        assert_eq!(parse_device_spec(bad), None, "{bad:?}");
    }
}

#[test]
fn empty_cmdline_gives_defaults() {
    let (cfg, problems) = parse("");
    assert_eq!(cfg, Config::default());
    assert!(problems.is_empty());
    assert_eq!(parse("\n"), (Config::default(), vec![]));
    assert_eq!(cfg.persist, DeviceSpec::Label("RAMSTICK".into()));
    assert_eq!(cfg.upper_size, Size::Percent(50));
    assert_eq!(cfg.init, "/sbin/init");
}

#[test]
fn every_known_parameter_is_applied() {
    assert_eq!(PARAMETERS.len(), PARAMS.len());
    for name in PARAMS {
        let param = params::find(name).expect("every name has its row");
        let mut cfg = Config::default();
        // The empty value is rejected by every parameter.
        assert!(!param.set(&mut cfg, ""), "{name}");
        assert_eq!(
            cfg,
            Config::default(),
            "{name} changed the config on rejection"
        );
    }
    assert!(params::find("ramstick.nope").is_none());
}

#[test]
fn names_are_unique_and_namespaced() {
    for (i, name) in PARAMS.iter().enumerate() {
        assert!(name.starts_with("ramstick."), "{name}");
        assert!(!PARAMS[i + 1..].contains(name), "{name} twice");
    }
}

/// Catches a `Config` field without a row, or a row left out of `table!`.
#[test]
fn every_config_field_but_consoles_has_one_row() {
    let value = serde_json::to_value(Config::default()).expect("serializes");
    let fields = value.as_object().expect("a struct");
    let luks = fields["luks"].as_object().expect("a struct");
    let leaves = fields.len() - 2 + luks.len(); // `luks` is split into its fields; no `consoles`
    assert_eq!(leaves, PARAMETERS.len());
}

#[test]
fn config_default_is_what_the_rows_declare() {
    for param in PARAMETERS {
        let mut cfg = Config::default();
        param.reset(&mut cfg);
        assert_eq!(cfg, Config::default(), "{}", param.name());
    }
}

/// A default that has a command-line form, given explicitly, changes nothing:
/// the documented default is the one in effect.
#[test]
fn documented_defaults_parse_to_the_default() {
    let mut with_form = 0;
    for param in PARAMETERS {
        let text = param.default_text();
        // A default in backticks is a command-line form; others (e.g. "the
        // kernel default") describe an absent value.
        let Some(form) = text.strip_prefix('`').and_then(|t| t.strip_suffix('`')) else {
            assert!(!text.contains('`') || text.contains(' '), "{text}");
            continue;
        };
        with_form += 1;
        let (cfg, mut problems) = parse(&format!("{}={form}", param.name()));
        // A parameter that needs another one's setting says it has no effect alone.
        if param.only_with().is_some() {
            problems.retain(|p| !p.message.contains("has no effect"));
        }
        assert!(problems.is_empty(), "{}: {problems:?}", param.name());
        assert_eq!(cfg, Config::default(), "{}={form}", param.name());
    }
    assert!(with_form >= 14, "{with_form}");
}

#[test]
fn all_parameters_set_their_fields() {
    let (cfg, problems) = parse(
        "ramstick.persist=PARTLABEL=p ramstick.boot=backup ramstick.profile=work-2 ramstick.upper=tmpfs \
         ramstick.upper.size=25% ramstick.timeout=7 ramstick.init=/bin/init \
         ramstick.swap=2G ramstick.swappiness=0 ramstick.user=bob ramstick.shell=never \
         ramstick.log=debug ramstick.luks=UUID=AB ramstick.luks.keyfile=/key \
         ramstick.luks.tries=10 ramstick.layers=ram ramstick.checkpoint=off \
         ramstick.save=off ramstick.slot=b ramstick.trial=on ramstick.trial.timeout=3600 \
         console=ttyS0 console=tty1",
    );
    assert!(problems.is_empty(), "{problems:?}");
    let expected = Config {
        persist: DeviceSpec::PartLabel("p".into()),
        boot: BootType::Backup,
        profile: "work-2".into(),
        upper: UpperKind::Tmpfs,
        upper_size: Size::Percent(25),
        zram_alg: None,
        timeout_secs: 7,
        init: "/bin/init".into(),
        swap: Some(2 << 30),
        swappiness: 0,
        user: "bob".into(),
        shell: ShellPolicy::Never,
        log: LogLevel::Debug,
        luks: Luks {
            device: Some(DeviceSpec::Uuid("ab".into())),
            keyfile: Some("/key".into()),
            tries: 10,
        },
        layers: LayersMode::Ram,
        checkpoint_minutes: None,
        save: SaveMode::Off,
        slot: crate::place::Slot::B,
        trial: Trial::On,
        trial_timeout_secs: 3600,
        consoles: vec!["ttyS0".into(), "tty1".into()],
    };
    assert_eq!(cfg, expected);
    let (cfg, _) = parse("ramstick.zram.alg=lzo-rle");
    assert_eq!(cfg.zram_alg.as_deref(), Some("lzo-rle"));
}

#[test]
fn bad_value_message_names_forms_and_fallback() {
    let p = one_problem("ramstick.boot=fast");
    assert_eq!(
        p,
        Problem {
            param: "ramstick.boot".into(),
            value: "fast".into(),
            message: "`ramstick.boot=fast` is not valid: use default, backup or clean; \
                      using default"
                .into(),
            fatal: false,
        }
    );
    let p = one_problem("ramstick.upper.size=101%");
    assert!(p
        .message
        .starts_with("`ramstick.upper.size=101%` is out of range: use "));
    assert!(p.message.ends_with("; using 50%"));
    let p = one_problem("ramstick.timeout");
    assert_eq!(p.value, "");
    assert!(p.message.starts_with("`ramstick.timeout` has no value: "));
}

#[test]
fn bad_device_is_fatal_and_keeps_default() {
    for cmdline in [
        "ramstick.persist=",
        "ramstick.persist",
        "ramstick.persist=sda",
        "ramstick.luks=x",
    ] {
        let (cfg, problems) = parse(cmdline);
        assert_eq!(problems.len(), 1, "{cmdline}");
        assert!(problems[0].fatal, "{cmdline}");
        assert_eq!(cfg.persist, Config::default().persist);
        assert_eq!(cfg.luks.device, None);
    }
    // Every other bad value is non-fatal.
    let (_, problems) = parse("ramstick.boot=x ramstick.upper=x ramstick.init=x ramstick.x=1");
    assert_eq!(problems.len(), 3 + 1);
    assert!(problems.iter().all(|p| !p.fatal));
}

#[test]
fn last_repeated_value_wins() {
    let (cfg, problems) = parse("ramstick.boot=bad ramstick.boot=clean");
    assert_eq!(cfg.boot, BootType::Clean);
    assert!(problems.is_empty());
    let (cfg, problems) = parse("ramstick.boot=clean ramstick.boot=bad");
    assert_eq!(cfg.boot, BootType::Default);
    assert_eq!(problems.len(), 1);
    let (_, problems) = parse("ramstick.x=1 ramstick.x=2");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].value, "2");
}

#[test]
fn unknown_parameters_list_the_known_ones() {
    let p = one_problem("ramstick.bogus=1 other.param=2 ramstickfoo");
    assert_eq!(p.param, "ramstick.bogus");
    assert!(!p.fatal);
    for name in PARAMS {
        assert!(
            p.message.contains(name),
            "{name} missing from {}",
            p.message
        );
    }
}

#[test]
fn ineffective_parameters_are_reported() {
    let p = one_problem("ramstick.upper=tmpfs ramstick.zram.alg=zstd");
    assert_eq!(p.param, "ramstick.zram.alg");
    assert!(p.message.contains("has no effect"));
    // The LUKS options also apply to a container found by auto-detection.
    let (_, problems) = parse("ramstick.luks.keyfile=/k ramstick.luks.tries=4");
    assert!(problems.is_empty(), "{problems:?}");
    let (_, problems) = parse("ramstick.luks=/dev/sda3 ramstick.luks.keyfile=/k");
    assert!(problems.is_empty());
}

#[test]
fn user_names_and_algorithms() {
    for good in [
        "a",
        "_",
        "user",
        "a-b_c9",
        "_abcdefghijklmnopqrstuvwxyz01234",
    ] {
        assert!(is_user_name(good), "{good}");
    }
    for bad in [
        "",
        "A",
        "9a",
        "-a",
        "a.b",
        "a b",
        "abcdefghijklmnopqrstuvwxyz0123456",
        "é",
    ] {
        assert!(!is_user_name(bad), "{bad}");
    }
    for good in ["zstd", "lz4", "lzo-rle", "842"] {
        assert!(is_alg_name(good), "{good}");
    }
    for bad in ["", "ZSTD", "lz4hc ", "a_b", "a/b"] {
        assert!(!is_alg_name(bad), "{bad}");
    }
}

#[test]
fn paths_must_be_absolute_without_control_characters() {
    let (cfg, problems) = parse(r#"ramstick.init="/sbin/my init""#);
    assert_eq!(cfg.init, "/sbin/my init");
    assert!(problems.is_empty());
    assert!(!is_abs_path("sbin/init"));
    assert!(!is_abs_path("/sbin/in\nit"));
    assert!(is_abs_path("/"));
}

#[test]
fn layers_forms() {
    assert_eq!(Config::default().layers, LayersMode::Mount);
    assert_eq!(parse("ramstick.layers=ram").0.layers, LayersMode::Ram);
    assert_eq!(parse("ramstick.layers=mount").0.layers, LayersMode::Mount);
    assert_eq!(LayersMode::Ram.to_string(), "ram");
    let (cfg, problems) = parse("ramstick.layers=RAM");
    assert_eq!(cfg.layers, LayersMode::Mount);
    assert_eq!(
        problems,
        vec![Problem {
            param: "ramstick.layers".into(),
            value: "RAM".into(),
            message: "`ramstick.layers=RAM` is not valid: use mount or ram; using mount".into(),
            fatal: false,
        }]
    );
}

#[test]
fn checkpoint_forms() {
    assert_eq!(Config::default().checkpoint_minutes, Some(15));
    for (value, minutes) in [
        ("off", None),
        ("1", Some(1)),
        ("60", Some(60)),
        ("1440", Some(1440)),
    ] {
        let (cfg, problems) = parse(&format!("ramstick.checkpoint={value}"));
        assert!(problems.is_empty(), "{value}: {problems:?}");
        assert_eq!(cfg.checkpoint_minutes, minutes, "{value}");
    }
    for value in ["0", "1441", "99999999999999999999"] {
        let p = one_problem(&format!("ramstick.checkpoint={value}"));
        assert_eq!(
            p.message,
            format!(
                "`ramstick.checkpoint={value}` is out of range: use off or a number of minutes \
                 from 1 to 1440; using 15"
            )
        );
        assert!(!p.fatal);
    }
    for value in ["15m", "-1", "OFF", "1.5"] {
        let (cfg, problems) = parse(&format!("ramstick.checkpoint={value}"));
        assert_eq!(cfg.checkpoint_minutes, Some(15));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains(" is not valid: "), "{value}");
    }
}

#[test]
fn save_forms() {
    assert_eq!(Config::default().save, SaveMode::On);
    assert_eq!(parse("ramstick.save=off").0.save, SaveMode::Off);
    assert_eq!(parse("ramstick.save=on").0.save, SaveMode::On);
    let p = one_problem("ramstick.save=no");
    assert!(
        p.message.contains("use on or off; using on") && !p.fatal,
        "{p:?}"
    );
}
