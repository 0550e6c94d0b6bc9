"""The words templates are built from and the values their parameter slots are filled with."""
from __future__ import annotations

import numpy as np

from ray_logmilp.synthetic.config import SyntheticConfig

NOUNS = """cache torus tree collective network ciod kernel node link card fan power supply voltage clock sensor
temperature interrupt scheduler daemon ethernet switch packet buffer queue thread process file directory mount disk
controller memory ddr dram sram dma channel port socket session partition block midplane rack service job loader
program image rts console message stream descriptor signal timer watchdog counter register table page segment
heap stack frame checkpoint snapshot journal ledger record barrier mutex lock semaphore token credential key
certificate license policy route gateway bridge tunnel proxy mailbox inbox cursor index catalog manifest bundle
archive volume filesystem inode superblock extent quota cgroup namespace container pod replica shard lease
beacon heartbeat pulse probe monitor collector agent relay broker topic partitioner consumer producer
pipeline stage worker executor dispatcher allocator reaper janitor sweeper compactor indexer crawler resolver
ecc parity capacitor regulator thermistor blower chassis backplane midplane nodecard servicecard linkcard
idoproxy mmcs bglmaster dbserver firmware bootloader microcode personality torusdriver fpu alu tlb""".split()
ADJS = """primary secondary local remote virtual physical nominal periodic background transient pending idle
active passive stale fresh cold warm hot redundant spare degraded healthy partial full empty dirty clean
global private shared exclusive readonly writable volatile persistent ephemeral internal external upstream
downstream inbound outbound lower upper inner outer early late rapid slow minor major auxiliary principal""".split()
VERBS = """initialized detected corrected received sent loaded registered updated scanned checked flushed
allocated released connected polled reset configured enabled disabled refreshed rotated synchronized
validated computed measured sampled queued dequeued scheduled dispatched accepted rejected acknowledged
throttled resumed suspended migrated replicated compacted indexed archived restored rebuilt calibrated
adjusted negotiated advertised discovered probed mapped unmapped pinned unpinned tagged untagged""".split()
PREPS = "on for from to at in with after by via under over into onto".split()
ADVS = """successfully normally quietly promptly again twice already still partially eventually silently
gracefully immediately lazily eagerly""".split()
KEYS = """rank pid uid gid jobid slot lane port seq len cnt rc id core mask addr offset size vc lun bus""".split()
DAEMONS = """ciod: idoproxydb: mmcs_db_server: BGLMASTER: ciodb: monitor: sysctl: rtsd: dbpoll: linkmon:
envmon: cmcs:""".split()
OPEN_VERBS = "started opened begun launched entered acquired mounted attached spawned armed".split()
CLOSE_VERBS = "finished closed ended completed exited released unmounted detached reaped disarmed".split()
WARN_ADJS = """correctable uncorrectable excessive unexpected abnormal missing invalid inconsistent
overdue stalled lost duplicate malformed corrupted unaligned unreachable""".split()
WARN_VERBS = "exceeded failed timed-out dropped refused aborted overflowed mismatched diverged stalled".split()
FAIL_WORDS = """panic fatal machine-check failure fault crash halt lockup deadlock corruption abort
segfault exception hang""".split()
COMPONENTS = ("KERNEL", "KERNEL", "KERNEL", "KERNEL", "APP", "MMCS", "LINKCARD", "DISCOVERY", "MONITOR",
              "HARDWARE", "BGLMASTER", "CMCS", "SERV_NET")
NORMAL_LEVELS = (("INFO", 0.80), ("WARNING", 0.08), ("ERROR", 0.05), ("SEVERE", 0.03), ("FATAL", 0.04))
ALERT_LEVELS = (("FATAL", 0.40), ("SEVERE", 0.20), ("ERROR", 0.20), ("FAILURE", 0.05), ("INFO", 0.15))
TAGS = """KERNDTLB KERNSTOR APPSEV KERNMNTF KERNTERM KERNREC APPREAD KERNRTSP APPRES LINKBLL MMCS APPUNAV
KERNMC KERNPAN KERNBIT KERNSOCK KERNPOW APPOUT APPTO APPCHILD APPALLOC KERNEXT KERNMICE KERNFSHD KERNCON
KERNSERV LINKDISC LINKIAP LINKPAP MASABNORM MONILL MONNULL MONPOW KERNNOETH APPBUSY""".split()
SLOT_KINDS = ("num1", "num2", "num3", "num4", "num6", "num9", "hex", "ip", "node", "path")


def node_name(i: int) -> str:
    """The i-th BGL node location (``R00-M0-N0-C:J02-U01`` layout)."""
    rack, rem = divmod(i, 128)
    mid, rem = divmod(rem, 64)
    nc, rem = divmod(rem, 4)
    j = rem
    return f"R{rack % 64:02d}-M{mid}-N{nc:X}-C:J{(j * 4 + 2) % 18:02d}-U{1 + (i % 2)}{i % 10}"


class ParameterPools:
    """Per-seed value pools for the string-valued parameters."""

    def __init__(self, config: SyntheticConfig):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xB00C]))
        self.nodes = np.array([node_name(i) for i in range(config.n_nodes)], dtype=object)
        ips = rng.integers(1, 255, size=(512, 4))
        ips[:, 0] = rng.choice([10, 172, 192], size=512)
        self.ips = np.array([".".join(map(str, r)) for r in ips.tolist()], dtype=object)
        users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
                 "mallory", "oscar", "peggy", "trent", "victor", "walter"]
        dirs = ["RAPTOR", "run", "scratch", "ckpt", "out", "data", "bin", "tmp"]
        self.paths = np.array(
            [f"/p/gb{rng.integers(1, 5)}/{users[rng.integers(len(users))]}/{dirs[rng.integers(len(dirs))]}"
             f"/{rng.integers(0, 100000)}/" for _ in range(2048)], dtype=object)

    def values(self, kind: str, rng: np.random.Generator, n: int) -> list[str]:
        if kind.startswith("num"):
            hi = 10 ** int(kind[3:])
            return list(map(str, rng.integers(0, hi, size=n).tolist()))
        if kind == "hex":
            return list(map("0x{:08x}".format, rng.integers(0, 1 << 32, size=n, dtype=np.int64).tolist()))
        pool = {"ip": self.ips, "node": self.nodes, "path": self.paths}[kind]
        return pool[rng.integers(0, len(pool), size=n)].tolist()

