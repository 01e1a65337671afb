"""The pinned sources of the LAReQA benchmarks: commit, languages and sha256 of every file (no heavy imports:
the run configuration checks benchmark names and languages against this)."""

from __future__ import annotations

BENCHMARKS = {
    "xquad-r": {
        # CC BY-SA 4.0
        "commit": "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c",
        "sha256": {
            "ar": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
            "de": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
            "el": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
            "en": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
            "es": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
            "hi": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
            "ru": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
            "th": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
            "tr": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
            "vi": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
            "zh": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
        },
    },
    "mlqa-r": {
        # CC BY-NC 4.0; the folder was deleted upstream later, hence the older pinned commit
        "commit": "354d67d1cd066854cdfbf5ad0e6105528976141d",
        "sha256": {
            "ar": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
            "de": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
            "en": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
            "es": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
            "hi": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
            "vi": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
            "zh": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
        },
    },
}


def benchmark_languages(name: str) -> list[str]:
    """The language codes a benchmark has."""
    return sorted(_spec(name)["sha256"])


def _spec(name: str) -> dict:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


# Tatoeba (XTREME / XTREME-R bitext retrieval): LASER's files, CC BY 2.0 FR (Tatoeba contributors).
# code -> (LASER's 3-letter code, pairs, sha256 of the xx side, sha256 of the English side); 41 languages: XTREME's 36
# plus XTREME-R's az lt pl ro uk (XTREME_R_ONLY).
TATOEBA_COMMIT = "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821"
TATOEBA = {
    "af": ("afr", 1000, "7bb9e073ad8422d6bfdec7c9ebdcef8ac486e72b237200e447923a8b921a0a56",
           "0b700c125efb4030b4cc50d9d765d5884afc24f39296f29b028a1b2a8512034f"),
    "ar": ("ara", 1000, "e67a0ae072b79cd9e8eb09f166c3bc0b23488d39f5720f2ee0a8350ae17b719f",
           "3c11838c963f598a52dcf2f452b666353538257001db5c59c3a5f54a999b336b"),
    "az": ("aze", 1000, "b0daccaaebeaa60ad24dcf42597a93afd238d8c263618db7c5ed6babe7d663e6",
           "7c428a247940252ddf75ee6de0172dc1cb6df922e7382412fc330590084c20a9"),
    "bn": ("ben", 1000, "ac3385695d6a6c7e5d18e38ad4b8b7d3780f3df23dd0ff3f539071b8269a8613",
           "67fbe75fec549d436c3356b6d6f8dd53179b6a908661b5d507d28c7fee83350e"),
    "bg": ("bul", 1000, "f9fa90cf3599d8c87f7a6ed22f5d648e3ce6687c705656a8c8ea088d891f79d5",
           "4b03b3b52ffb7cf4286e0c4453c90910a3021546f160bdf0e4d39d1f45bfbc0b"),
    "zh": ("cmn", 1000, "965d033966fcd186c89741ad49ab4b0a0b2bbd33e02666635ff3b2be23c1ac1f",
           "29ba36232488f5806aceccac57c59c5e750ddd08edb40eef417e3ada9ff9a239"),
    "de": ("deu", 1000, "edfa6f75a42554df388f45891735d5e4214158a99def4b73b5908af4a3054551",
           "eb9cc83a42f2c4b22f310d05311207e41abb56c2a084666cac3ee0f84d2d0b84"),
    "el": ("ell", 1000, "4fb3d3d30bdafd15100dfad5c4680f8f2ed5ca87ed0a6122e2fe2aa21fee65e8",
           "1f630710e718e2f85a4e757d3c7f3d6e78ded0b25c99653b4c552138318d9ffe"),
    "et": ("est", 1000, "94856999ef35e5357502d7ecf50419d0108b99270e507d9c57f8b283bd1be9c5",
           "bb033b10596178452aecf2d97ad25580251375e7d224d8b38dad3d93d69b1e4f"),
    "eu": ("eus", 1000, "4255fb70a6c268b09fcc59a9b308f0fcaaf45ef45e66fc55bf3c80eac4d8c97b",
           "1e80f0174ad544697fd69ddcf21287ca10c5e3cacba2fc42bf1d68c460d14ba2"),
    "fi": ("fin", 1000, "8db3c734f755d578445947f1182f40faf2a9a0eca37561dd248717c088802d60",
           "322e610359f4d24852e673bbe4524d52c26dbf980aca0760e95c66dc21ecd504"),
    "fr": ("fra", 1000, "644172ff9642fefa9e41c29b7d6f44196518e84350dc44d4992e943c0cca92b6",
           "5634220f8a26a9a23b84753a9aec0b0832e6bdaa9da3f83e0bd84c928c3f46e3"),
    "he": ("heb", 1000, "4a07ca4b8a6fb7ab499791573a2454730f47acbe209359d7b9372a9f6094a102",
           "73c27ed0f76c1d2da199230f05489749e10bb67ab879c6dfee8ca9807d6bd99c"),
    "hi": ("hin", 1000, "15e4fb0a394be4438319f1d6955d1aea226e2a8c5ad38798b23b76ae43d742ed",
           "adfce2269a55dbac69b25c0f4f6eb89e0f9383165485925a2e042e61b9480562"),
    "hu": ("hun", 1000, "56bd0682be8c1db6568313650b3310d641cc8d0019d12dd7caf201302350eeac",
           "5323266e91ddee67ed1ae00d6bbac0cdf3d37749d1b2da3459bf0d424bc71383"),
    "id": ("ind", 1000, "4f03cd70cba071f746eacd3ebf6b60fd5a8377ce18b4cc52edec6721f05f352a",
           "62a3f5127b60eb3526b8fa3994a68fa1a1f114f3a395307a8808a3517c05ffc5"),
    "it": ("ita", 1000, "9b3f369d0ed92273b46dd3b983721636e3d15024ce7125f5103229249c386d26",
           "738bf8f981e42d285f4f08bc09238782d285b02050e6e95287aa4e998bb7b24b"),
    "jv": ("jav", 205, "ad88399db8f94c2a040aa53e7e862225964fac9308a3beb3d5b38f3eca2f827f",
           "172776353690f6c047ea21da969fa6979980d692fff1cfbac17eb25851423760"),
    "ja": ("jpn", 1000, "56040bd6949170a631039d9f8f4c6440db8761b0065c9686feba55c99a320d46",
           "b42129b34e1bf225ccc25fc00e532a6113af98adbc6605b93021bd8aadeb68b6"),
    "ka": ("kat", 746, "6ef69b5efbf355597ed91eb355b33a5f524bdf0875dbeaaccf6375badc20e29b",
           "d70a14aa64fd7c6b545f11aea754a632e1cbecb91af27fcf6a98a8449a48a8e7"),
    "kk": ("kaz", 575, "f20c682582a80b6aa10f3b933db93bc314449b554ce611e263bc75990b319aef",
           "0ab684e7032c6520540d5785adf00ef206d097221d0dd4dc9bcaabd64068e10d"),
    "ko": ("kor", 1000, "e550c84184ec35b1a0dab3154284719511a21746e53c40f46eb6ab08179e9188",
           "f900cf3c9b72ed5a400e1804702863ff3df00be58eb060902e02285d0e68fab3"),
    "lt": ("lit", 1000, "1fa3d054d66dae6ffa69e5d23e1860f17d6c32cee4bdc4c2eafe9b3c4a37a481",
           "5dfc3ef9437f0a8495f39249a1010237e7503ca6803fd6e73a2621b5165b79cc"),
    "ml": ("mal", 687, "1a896f54f85a454fb0123864049c65921ae9dfd0cafda6deef8060f0104d965e",
           "4d80cdbb844cd4e33f874e5dc45c1cdda4f80998034448f7eb56b8b6532a6622"),
    "mr": ("mar", 1000, "b2931584fbe62062beb97cc939e4d208ace5ee56f15808860ab14e130fd3c576",
           "709d09b697dca053c814b9d525b72cb47cb011aa860c6598f3e2b1b3dd1280dd"),
    "nl": ("nld", 1000, "d564d4ce1c621ccaefdbe9f5cb08eacccc7bf2a0b58666303e84ca9c7973bdb7",
           "3b8836749df573a53235b85ed6771f31bf2de428f520d2d6a1dd94b61b4ef057"),
    "fa": ("pes", 1000, "f1553713723491fe5876e1060b18fb4abf0c77be3ba06db2e3307e83aedbbb32",
           "b5c6cf8c8d93ff8f2fe26b53f3ee29b62db9c6f7dcddcb086ba48953f4ce926b"),
    "pl": ("pol", 1000, "93e1378a66dfc83fcab4cf115f3eaa2635b42648e4746478f83f71cc6291cbfd",
           "d21cca6c6c28a9df7e8ecdc923672311ca3395241b58a5749b34854d6c65df8f"),
    "pt": ("por", 1000, "b0c926a232c9889a87a1a970f9399c5618c2d95baf204321e9da794c0aec16f5",
           "deb4568cfb7b7cbbc060a7fe97c4639fb4680842f4fcd28df791ffdbb753855a"),
    "ro": ("ron", 1000, "ad5c4a9f4920718203534d1f8271e27021b9af54b2c908dec66851d4dc681fd4",
           "1064c638220dc9de0868baee327e091ae815214674295b62b13448ef442c448d"),
    "ru": ("rus", 1000, "446ff2cae66053c2277d9735b2c2df6b786cae258385f7ade7bed68d8835c6a0",
           "7b26f52d6085b7c4944d6f5f6f5b6e1932085b42112f1444db515ce59e878fb8"),
    "es": ("spa", 1000, "f9628cea40481e8251f0999718bd893cff0f261752f5e526b3bc20284e2ca018",
           "89e4470f4572040b1ca94b3edad97dcd8bd2f0141f072e12933b8659dadf917d"),
    "sw": ("swh", 390, "1c672915446c336cc378676e6dbf91eb54d27bbfd0c61563d349265bc6374753",
           "e8539647caff9e329776ae863b6224d432923c6e4e9256b9df92ca58ff282eac"),
    "ta": ("tam", 307, "bde87fb1ddedccf6c7a2b70ffdd19a959a573c113c2e7a041c4b623fb2170bde",
           "e7c5106acdd100214a161970b2a5c31e7386e5b6a963e3d3afdf30412c90ac53"),
    "te": ("tel", 234, "7e1a1bcd106cce650a09e2f042f1354b55b29bea2bcfa86554dfa0ad12ce8976",
           "1efc2ef57d9b1ecebfc4baa45e86fd793e38473304e9c043aebabc3a1b29a294"),
    "tl": ("tgl", 1000, "f99165dc05190b99f6574fe24db884ff85d111612a25e7a37323f001aafc2a6e",
           "e7c9beda3f3072a968a34a7226a66d1ebf1dcb33cf002805dc752f80a7c620ae"),
    "th": ("tha", 548, "65c7b3c01a56a1ac8971e72e0ea8e74a027718dc84044d8802c0ab36395a3156",
           "2881c82d2c5fa59cf0a68bc9e012f5e0b0a716f7357cbecf77c247efc2fd7294"),
    "tr": ("tur", 1000, "1ffa0acc006018b3105abda41a4d4ca42f3c122964a49b71793546367b079a86",
           "a768df7dd3d1344f872a458b32c3a65e24f8381826ccb16ba6677426176c8121"),
    "uk": ("ukr", 1000, "7d11ce1654600e3a3a2a84ce06aff213e22903d9e75f9f5eec09f85ce85abf2a",
           "f0df48c6911ca71b315a5df5a78438bda23129f375fe50dc7ebf6a0f66bd05e0"),
    "ur": ("urd", 1000, "2efc22dc61885a9454aeeee68c8b841c7f9138d53ba644a82308bd210140450b",
           "dab35fda3f73b3fd86b6b9f9f9f6242430961aa5d1ac247adbc646867df79cec"),
    "vi": ("vie", 1000, "6dbb02d778b0bfc8678cd85f87db76de55dd7e409a26fe32ad42d50e0f1fff77",
           "a1f60bd8ae6c42224a4c050d2aa1ff4242d14827d64d7831e96ecf2b2c367f5f"),
}
TATOEBA_XTREME_R_ONLY = ("az", "lt", "pl", "ro", "uk")

# MIRACL dev (the reference paper's appendix): its 15 languages, and the small corpora a laptop can take whole.
MIRACL_PAPER_LANGUAGES = ("sw", "bn", "hi", "ko", "th", "te", "fi", "ja", "es", "fr", "ru", "zh", "fa", "ar", "id")
MIRACL_LANGUAGES = ("ar", "bn", "de", "en", "es", "fa", "fi", "fr", "hi", "id", "ja", "ko", "ru", "sw", "te", "th", "yo",
                    "zh")  # every language with a dev split

# The evaluation tasks a run may name in eval_benchmarks (hybridlib.evaluation.tasks implements them).
TASK_NAMES = ("xquad-r", "mlqa-r", "tatoeba", "miracl")


def task_languages(name: str) -> list[str]:
    """The language codes a task can evaluate (Tatoeba: the non-English side of each pair with English)."""
    if name == "tatoeba":
        return sorted(TATOEBA)
    if name == "miracl":
        return sorted(MIRACL_LANGUAGES)
    return benchmark_languages(name)
