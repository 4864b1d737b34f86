"""Cache hit ratio on a realistic catalog: several edges behind haproxy's consistent hashing, the
same edges behind round robin, and one shared tier, across cache sizes.

A trace-driven simulation in one process. What decides the answer is taken from the platform:
the ladders are the transcoder's own plan (``services.transcoder.ladder.plan_ladder``) at its
4 s segments, objects are charged as the edge's disk store charges them (``charge_of`` over the
body and its metadata file), eviction is the edge's LRU, and haproxy's consistent hashing is
modelled on its ``lb_chash`` over the same key its configuration hashes: the object path with
the path token removed.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from load_tests.analysis.report import Claim, Experiment, experiment_main
from services.edge.store import BLOCK_BYTES, charge_of
from services.transcoder.ladder import Rung, plan_ladder
from shared.media.ffprobe import MediaInfo

SEGMENT_SECONDS = 4
# Each cached object also has its metadata file (a few hundred bytes of JSON): one block.
META_CHARGE = BLOCK_BYTES
# Sources uploaded: (width, height, frames per second) and how often each is seen.
SOURCES = (
    ((3840, 2160, 30), 0.05),
    ((1920, 1080, 60), 0.10),
    ((1920, 1080, 30), 0.35),
    ((1280, 720, 30), 0.30),
    ((854, 480, 30), 0.15),
    ((640, 360, 30), 0.05),
)
# Which rung a session plays, counted from the top of its ladder.
RUNG_SHARES = (0.40, 0.30, 0.15, 0.10, 0.05)
# The key is split in fields: video, rung (MASTER_RUNG for the master playlist), object
# (0 variant playlist, 1 init segment, 2 + i segment i).
RUNG_BITS, OBJECT_BITS = 8, 16
MASTER_RUNG = 0xFF
FIRST_SEGMENT = 2
SEED_HIT_RATIO = 0.94


@dataclass(frozen=True)
class Video:
    id: str
    seconds: float
    rungs: tuple[Rung, ...]

    @property
    def segments(self) -> int:
        return math.ceil(self.seconds / SEGMENT_SECONDS)


@dataclass
class Trace:
    """The requests of every session, merged in time order; ``measured_from`` is the first one
    counted (the ones before only warm the caches)."""

    keys: list[int]
    sizes: list[int]
    measured_from: int


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.analysis.cache", description=__doc__
    )
    parser.add_argument("--videos", type=int, default=3000, help="videos in the catalog")
    parser.add_argument("--sessions", type=int, default=24000, help="viewing sessions replayed")
    parser.add_argument("--zipf", type=float, default=0.9, help="Zipf exponent of popularity")
    parser.add_argument("--edges", type=int, default=4, help="edges behind haproxy")
    parser.add_argument(
        "--concurrency", type=int, default=400, help="sessions playing at once, on average"
    )
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[1, 2, 5, 10, 20, 30, 50],
        help="total cache sizes, in percent of the catalog's bytes",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="share of the trace that only warms the caches"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of every random draw")
    return parser


# -- the catalog ---------------------------------------------------------------------------------


def make_catalog(count: int, rng: random.Random) -> list[Video]:
    """Videos with the transcoder's ladders and log-normal durations (median 5 min, 20 s-1 h)."""
    shapes, weights = zip(*SOURCES, strict=True)
    videos = []
    for _ in range(count):
        width, height, fps = rng.choices(shapes, weights)[0]
        info = MediaInfo(
            duration_seconds=0,
            format_name="mp4",
            bit_rate=None,
            has_video=True,
            has_audio=True,
            width=width,
            height=height,
            frame_rate=fps,
        )
        seconds = min(3600.0, max(20.0, rng.lognormvariate(math.log(300), 1.0)))
        vid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        videos.append(Video(vid, seconds, tuple(plan_ladder(info))))
    return videos


def key_of(video: int, rung: int, obj: int) -> int:
    return (((video << RUNG_BITS) | rung) << OBJECT_BITS) | obj


def split_key(key: int) -> tuple[int, int, int]:
    obj = key & ((1 << OBJECT_BITS) - 1)
    rung = (key >> OBJECT_BITS) & ((1 << RUNG_BITS) - 1)
    return key >> (OBJECT_BITS + RUNG_BITS), rung, obj


def path_of(videos: list[Video], key: int) -> str:
    """The object's path as haproxy hashes it: ``/origin/videos/<id>/hls/...``, no token."""
    index, rung, obj = split_key(key)
    video = videos[index]
    prefix = f"/origin/videos/{video.id}/hls/"
    if rung == MASTER_RUNG:
        return prefix + "master.m3u8"
    name = video.rungs[rung].name
    if obj == 0:
        return f"{prefix}{name}/index.m3u8"
    if obj == 1:
        return f"{prefix}{name}/init.mp4"
    return f"{prefix}{name}/seg_{obj - FIRST_SEGMENT:05d}.m4s"


class Sizes:
    """Object sizes: segments at the rung's target bitrate (video + audio) with a log-normal
    per-segment spread (sigma 0.3, mean 1), small playlists and init segments."""

    SPREAD = 1024

    def __init__(self, videos: list[Video], rng: random.Random) -> None:
        self.videos = videos
        sigma = 0.3
        self.factors = [rng.lognormvariate(-(sigma**2) / 2, sigma) for _ in range(self.SPREAD)]

    def of(self, key: int) -> int:
        index, rung, obj = split_key(key)
        video = self.videos[index]
        if rung == MASTER_RUNG:
            return 200 + 180 * len(video.rungs)
        if obj == 0:
            return 200 + 40 * video.segments
        if obj == 1:
            return 1200
        r = video.rungs[rung]
        mean = (r.video_kbps + r.audio_kbps) * 1000 / 8 * SEGMENT_SECONDS
        return int(mean * self.factors[(key * 2654435761) % self.SPREAD])

    def following(self, key: int) -> int | None:
        """The key of the segment after segment ``key``; None after the last one or for other
        objects."""
        index, rung, obj = split_key(key)
        if rung == MASTER_RUNG or obj < FIRST_SEGMENT:
            return None
        return key + 1 if obj + 1 - FIRST_SEGMENT < self.videos[index].segments else None

    def catalog_bytes(self) -> int:
        """Every object of every video, as the edges would charge them."""
        total = 0
        for index, video in enumerate(self.videos):
            total += charge_of(self.of(key_of(index, MASTER_RUNG, 0))) + META_CHARGE
            for rung in range(len(video.rungs)):
                for obj in range(FIRST_SEGMENT + video.segments):
                    total += charge_of(self.of(key_of(index, rung, obj))) + META_CHARGE
        return total


# -- viewers -------------------------------------------------------------------------------------


def session_keys(videos: list[Video], rng: random.Random, popularity: list[float]) -> list[int]:
    """One session's requests: master, the variant and init of one rung, then segments in
    order until the viewer leaves (watched share exponential, mean 1/2, at least one segment)."""
    index = rng.choices(range(len(videos)), popularity)[0]
    video = videos[index]
    shares = RUNG_SHARES[: len(video.rungs)]
    rung = rng.choices(range(len(shares)), shares)[0]
    watched = max(1, min(video.segments, math.ceil(rng.expovariate(2.0) * video.segments)))
    objs = range(FIRST_SEGMENT + watched)
    return [key_of(index, MASTER_RUNG, 0), *(key_of(index, rung, obj) for obj in objs)]


def make_trace(
    videos: list[Video], sizes: Sizes, args: argparse.Namespace, rng: random.Random
) -> Trace:
    """Sessions arriving as a Poisson process, each playing in real time (a segment every 4 s,
    playlists and init at once), merged into one time-ordered request stream."""
    ranks = list(range(len(videos)))
    rng.shuffle(ranks)  # popularity independent of length and ladder
    popularity = [0.0] * len(videos)
    for rank, index in enumerate(ranks, start=1):
        popularity[index] = 1 / rank**args.zipf
    sessions = [session_keys(videos, rng, popularity) for _ in range(args.sessions)]
    mean_seconds = SEGMENT_SECONDS * sum(len(s) - 3 for s in sessions) / len(sessions)
    rate = args.concurrency / mean_seconds
    now = 0.0
    pending: list[tuple[float, int, int]] = []  # (time, session, position)
    for number in range(len(sessions)):
        now += rng.expovariate(rate)
        heapq.heappush(pending, (now, number, 0))
    keys: list[int] = []
    while pending:
        at, number, position = heapq.heappop(pending)
        keys.append(sessions[number][position])
        if position + 1 < len(sessions[number]):
            step = SEGMENT_SECONDS if position >= 2 else 0.0
            heapq.heappush(pending, (at + step, number, position + 1))
    return Trace(keys, [sizes.of(k) for k in keys], int(len(keys) * args.warmup))


# -- the layouts ---------------------------------------------------------------------------------


class LruCache:
    """The edge disk store's policy (``services.edge.store.DiskStore``): objects charged in
    whole blocks for body and metadata, least recently used evicted first, an object larger than
    the whole cache not stored. Entries remember whether a prefetch brought them."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.index: OrderedDict[int, list[int]] = OrderedDict()  # key -> [charge, prefetched]

    def get(self, key: int) -> list[int] | None:
        entry = self.index.get(key)
        if entry is not None:
            self.index.move_to_end(key)
        return entry

    def put(self, key: int, size: int, prefetched: bool = False) -> None:
        charge = charge_of(size) + META_CHARGE
        if charge > self.max_bytes:
            return
        while self.index and self.used + charge > self.max_bytes:
            _, (evicted, _) = self.index.popitem(last=False)
            self.used -= evicted
        self.index[key] = [charge, prefetched]
        self.used += charge


def full_hash(a: int) -> int:
    """Bob Jenkins' 32-bit integer hash, haproxy's ``full_hash``."""
    m = 0xFFFFFFFF
    a = ((a + 0x7ED55D16) + (a << 12)) & m
    a = ((a ^ 0xC761C23C) ^ (a >> 19)) & m
    a = ((a + 0x165667B1) + (a << 5)) & m
    a = ((a + 0xD3A2646C) ^ (a << 9)) & m
    a = ((a + 0xFD7046C5) + (a << 3)) & m
    return ((a ^ 0xB55A4F09) ^ (a >> 16)) & m


def sdbm(text: str) -> int:
    """haproxy's default hash function for ``balance hash``."""
    h = 0
    for byte in text.encode():
        h = (byte + (h << 6) + (h << 16) - h) & 0xFFFFFFFF
    return h


class HashRing:
    """haproxy's consistent hashing (``lb_chash``): each server of weight 1 gets 16 points at
    ``full_hash(id * 4096 + n)``; a key (sdbm of the hashed sample, avalanched by
    ``full_hash``) goes to the server of the nearest point before or after it."""

    POINTS_PER_SERVER = 16  # weight 1 x BE_WEIGHT_SCALE
    ID_RANGE = 4096  # SRV_EWGHT_RANGE

    def __init__(self, servers: int) -> None:
        points = sorted(
            (full_hash(sid * self.ID_RANGE + n), sid - 1)
            for sid in range(1, servers + 1)
            for n in range(self.POINTS_PER_SERVER)
        )
        self.points = [p for p, _ in points]
        self.owners = [s for _, s in points]

    def server(self, path: str) -> int:
        h = full_hash(sdbm(path))
        after = bisect.bisect_left(self.points, h) % len(self.points)
        before = after - 1
        dn = (self.points[after] - h) & 0xFFFFFFFF
        dp = (h - self.points[before]) & 0xFFFFFFFF
        return self.owners[before] if dp <= dn else self.owners[after]


@dataclass
class Outcome:
    """Counted over the measured part of the trace."""

    requests: int = 0
    hits: int = 0
    bytes_served: int = 0
    bytes_from_origin: int = 0

    @property
    def request_hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        """Bytes viewers got without the origin sending them: 1 - origin bytes / bytes served."""
        return 1 - self.bytes_from_origin / self.bytes_served if self.bytes_served else 0.0


@dataclass(frozen=True)
class Layout:
    """How requests reach caches: ``route[i]`` is the cache of request ``i`` among ``tiers``."""

    name: str
    tiers: int
    route: list[int]
    prefetch: bool = False


def folder_of(path: str) -> str:
    """The rendition's folder: what haproxy would hash with the file name cut off too."""
    return path.rsplit("/", 1)[0] + "/"


def make_layouts(trace: Trace, videos: list[Video], edges: int) -> list[Layout]:
    """The layouts compared, over ``edges`` edges (one cache for the shared tier)."""
    ring = HashRing(edges)
    paths = {k: path_of(videos, k) for k in set(trace.keys)}
    by_path = {k: ring.server(p) for k, p in paths.items()}
    by_folder = {k: ring.server(folder_of(p)) for k, p in paths.items()}
    hashed = [by_path[k] for k in trace.keys]
    return [
        Layout("consistent", edges, hashed),
        Layout("round robin", edges, [i % edges for i in range(len(trace.keys))]),
        Layout("shared tier", 1, [0] * len(trace.keys)),
        Layout("consistent + prefetch", edges, hashed, prefetch=True),
        Layout(
            "consistent by rendition + prefetch",
            edges,
            [by_folder[k] for k in trace.keys],
            prefetch=True,
        ),
    ]


def replay(trace: Trace, route: list[int], caches: list[LruCache], sizes: Sizes | None) -> Outcome:
    """Every request through its cache. With ``sizes``, the edge's next-segment prefetch:
    a segment miss, or the first use of a prefetched segment, fetches the following one into
    the same edge."""
    out = Outcome()
    start = trace.measured_from
    for i, key in enumerate(trace.keys):
        cache = caches[route[i]]
        size = trace.sizes[i]
        entry = cache.get(key)
        counted = i >= start
        if counted:
            out.requests += 1
            out.bytes_served += size
        if entry is None:
            cache.put(key, size)
            if counted:
                out.bytes_from_origin += size
            follow = sizes is not None
        else:
            if counted:
                out.hits += 1
            follow = bool(entry[1])
            entry[1] = 0
        if follow and sizes is not None:
            following = sizes.following(key)
            if following is not None and cache.get(following) is None:
                fetched = sizes.of(following)
                cache.put(following, fetched, prefetched=True)
                if counted:
                    out.bytes_from_origin += fetched
    return out


def simulate(trace: Trace, layout: Layout, total_bytes: int, sizes: Sizes) -> Outcome:
    """The trace through ``layout`` with ``total_bytes`` of cache over all its tiers."""
    caches = [LruCache(total_bytes // layout.tiers) for _ in range(layout.tiers)]
    return replay(trace, layout.route, caches, sizes if layout.prefetch else None)


def busiest_share(trace: Trace, layout: Layout) -> float:
    """The share of the counted bytes its busiest cache receives."""
    received = [0] * layout.tiers
    for i in range(trace.measured_from, len(trace.keys)):
        received[layout.route[i]] += trace.sizes[i]
    return max(received) / sum(received)


# -- the experiment ------------------------------------------------------------------------------


def first_size_reaching(points: list[tuple[float, float]], target: float) -> str:
    for size, ratio in points:
        if ratio >= target:
            return f"{size:g}%"
    return f"never (best {max(r for _, r in points):.1%})"


STYLES = ("o-", "s-", "^--", "v-", "D-")


def plot(results: Results, ceiling: Outcome, folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "cache.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, what, attr in (
        (axes[0], "requests (X-Cache)", "request_hit_ratio"),
        (axes[1], "bytes (origin offload)", "byte_hit_ratio"),
    ):
        for style, (layout, points) in zip(STYLES, results.items(), strict=False):
            sizes = [s for s, _ in points]
            ax.plot(sizes, [getattr(o, attr) * 100 for _, o in points], style, label=layout)
        ax.axhline(getattr(ceiling, attr) * 100, color="grey", linestyle=":", label="unbounded")
        ax.axhline(SEED_HIT_RATIO * 100, color="red", linestyle="--", label="seed's 94%")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{s:g}%" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("total cache size (% of the catalog's bytes, log scale)")
        ax.set_title(f"hit ratio by {what}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("hit ratio (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


Results = dict[str, list[tuple[float, Outcome]]]


def table(results: Results, ceiling: Outcome) -> list[list[object]]:
    rows: list[list[object]] = [
        [layout, percent, round(o.request_hit_ratio * 100, 1), round(o.byte_hit_ratio * 100, 1)]
        for layout, points in results.items()
        for percent, o in points
    ]
    unbounded = [round(ceiling.request_hit_ratio * 100, 1), round(ceiling.byte_hit_ratio * 100, 1)]
    return [*rows, ["unbounded", "-", *unbounded]]


def reaching(results: Results) -> dict[str, tuple[str, str]]:
    """Per layout, the smallest cache size reaching the seed's ratio: (requests, bytes)."""
    return {
        layout: (
            first_size_reaching([(s, o.request_hit_ratio) for s, o in points], SEED_HIT_RATIO),
            first_size_reaching([(s, o.byte_hit_ratio) for s, o in points], SEED_HIT_RATIO),
        )
        for layout, points in results.items()
    }


def verdict(reach: dict[str, tuple[str, str]], ceiling: Outcome) -> str:
    by_requests = [layout for layout, (req, _) in reach.items() if not req.startswith("never")]
    by_bytes = [layout for layout, (_, byt) in reach.items() if not byt.startswith("never")]
    if not by_requests:
        return (
            "does not hold for this catalog and trace: no layout reaches 94% of requests "
            f"(an unbounded cache: {ceiling.request_hit_ratio:.1%})"
        )
    by_bytes_text = (
        f"by bytes for {', '.join(by_bytes)}"
        if by_bytes
        else "no layout takes 94% of the bytes off the origin"
    )
    return (
        "holds by requests (X-Cache, prefetched segments count as hits) only for "
        f"{', '.join(by_requests)}, from the sizes named; {by_bytes_text}"
    )


def findings(
    results: Results, ceiling: Outcome, sizes: list[float], edges: int, busiest: float
) -> str:
    mid = 10.0 if 10.0 in sizes else sizes[len(sizes) // 2]
    at = {layout: dict(points)[mid] for layout, points in results.items()}

    def both(layout: str) -> str:
        o = at[layout]
        return f"{o.request_hit_ratio:.1%} of requests, {o.byte_hit_ratio:.1%} of bytes"

    return f"""\
- At {mid:g}% of the catalog: consistent hashing {both("consistent")}; round robin
  {both("round robin")}; one shared tier {both("shared tier")}. Round robin makes every edge
  cache the same popular objects, so {edges} edges hold about what one of them holds; path hashing
  gives each object one edge, so the edges together behave like the shared tier. The ring is
  uneven (16 points per edge: the busiest edge receives {busiest:.0%} of the bytes, an even split
  {1 / edges:.0%}), which costs little here.
- The edge's next-segment prefetch fights path hashing: it fetches the next segment into the edge
  that missed, while haproxy sends the viewer's next request to the edge owning that path. With
  it (the platform's defaults today): {both("consistent + prefetch")}: a few more hits, and the
  origin sends more bytes than without prefetch (byte ratio below the consistent row, negative
  when it sends more than viewers receive). Hashing on the rendition's folder instead (haproxy:
  cut the file name off the hashed path) keeps a rendition's segments on one edge, so prefetch
  lands where the viewer goes next: {both("consistent by rendition + prefetch")}. Viewers then
  see hits on nearly every segment after the first, at the origin traffic of plain consistent
  hashing.
- Byte hit ratios (origin offload) level off at the unbounded ceiling
  ({ceiling.byte_hit_ratio:.1%} of bytes, {ceiling.request_hit_ratio:.1%} of requests without
  prefetch): beyond it the misses are first views of the long tail, which no cache size removes;
  only more views per video in a cache's lifetime (a bigger audience, a heavier head) raise it."""


def run(args: argparse.Namespace) -> Experiment:
    if args.quick:
        args.videos, args.sessions, args.concurrency = 120, 1000, 30
        args.sizes = [1, 5, 20, 50]
    rng = random.Random(args.seed)
    videos = make_catalog(args.videos, rng)
    sizes = Sizes(videos, rng)
    catalog = sizes.catalog_bytes()
    trace = make_trace(videos, sizes, args, rng)
    layouts = make_layouts(trace, videos, args.edges)
    unique = sum(charge_of(sizes.of(k)) + META_CHARGE for k in set(trace.keys))
    results: Results = {layout.name: [] for layout in layouts}
    for percent in args.sizes:
        for layout in layouts:
            outcome = simulate(trace, layout, int(catalog * percent / 100), sizes)
            results[layout.name].append((percent, outcome))
    ceiling = simulate(trace, layouts[2], 10 * catalog, sizes)
    reach = reaching(results)
    measured = "; ".join(
        f"{layout}: requests {req}, bytes {byt}" for layout, (req, byt) in reach.items()
    )
    return Experiment(
        key="cache",
        title="Cache hit ratio by layout and cache size",
        method=method(args, catalog, unique, len(trace.keys)),
        command="",
        columns=["layout", "cache (% of catalog)", "request hit ratio %", "byte hit ratio %"],
        rows=table(results, ceiling),
        plot=plot(results, ceiling, args.plots),
        claims=[
            Claim(
                finding="cache hit rates reach 94%",
                seed="94%",
                measured=f"smallest total cache reaching 94%: {measured}; unbounded cache "
                f"{ceiling.request_hit_ratio:.1%} of requests, {ceiling.byte_hit_ratio:.1%} "
                "of bytes",
                verdict=verdict(reach, ceiling),
            )
        ],
        findings=findings(
            results, ceiling, args.sizes, args.edges, busiest_share(trace, layouts[0])
        ),
    )


def method(args: argparse.Namespace, catalog: int, unique: int, requests: int) -> str:
    return f"""\
A trace-driven simulation in one process (seed {args.seed}), with the platform's own rules:

- Catalog: {args.videos} videos. Sources drawn from a mix of 2160p30 (5%), 1080p60 (10%),
  1080p30 (35%), 720p (30%), 480p (15%) and 360p (5%); each ladder is the transcoder's plan
  (`plan_ladder`: Apple-style bitrates, never upscaled, 128 kb/s audio per rung) cut into
  {SEGMENT_SECONDS} s segments. Durations log-normal (median 5 min, 20 s to 1 h). Segment size
  = the rung's target bitrate x {SEGMENT_SECONDS} s, times a log-normal spread (sigma 0.3, mean
  1) per segment; playlists and init segments are small. Catalog: {catalog / 1e9:,.0f} GB as
  charged on disk.
- Viewers: {args.sessions} sessions arriving as a Poisson process ({args.concurrency} playing
  at once on average). A session picks a video by Zipf popularity (s = {args.zipf}, ranks
  shuffled so popularity is independent of length), a rung by position from the top of its
  ladder (40/30/15/10/5%) and keeps it (no ABR switches), fetches master, variant and init, then
  plays segments in real time until it leaves (watched share exponential with mean 1/2). The
  {requests:,} requests touch {unique / catalog:.0%} of the catalog's bytes; the first
  {args.warmup:.0%} of them only warm the caches, the rest are counted.
- Caches: the edge's disk policy, replicated (`DiskStore`: LRU over body + metadata charged in
  {BLOCK_BYTES} B blocks by the edge's own `charge_of`; nothing bigger than the cache stored);
  the memory tier in front of it is left out (it holds bodies the disk also has). The cache size
  on the x axis is the layout's total: {args.edges} edges holding 1/{args.edges} of it each, or
  one shared tier holding all of it.
- Layouts: **consistent**: haproxy `balance hash` on the path without its token, `hash-type
  consistent`, modelled on haproxy's `lb_chash` (sdbm of the path avalanched by `full_hash`, 16
  points per server of weight 1 at `full_hash(id x 4096 + n)`, nearest point wins; written from
  haproxy's source, not checked bit for bit against haproxy 2.6's choices). **round robin**:
  each request to the next edge (haproxy balances every request of a keep-alive connection).
  **shared tier**: one cache of the summed size (a second cache level, or one big edge).
  **consistent + prefetch**: the same hashing with the edge's next-segment prefetch on, its
  default (a segment miss, or a viewer's first use of a prefetched segment, fetches the next
  segment into the same edge). **consistent by rendition + prefetch**: the hash taken on the
  rendition's folder instead of the whole path, prefetch on.
- Metrics: request hit ratio (what X-Cache says, prefetched segments count as hits) and byte hit
  ratio = 1 - bytes the origin sent / bytes served (prefetched bytes count as origin bytes, so
  wasted prefetches can make it negative). The unbounded row is one cache larger than the
  catalog: only first requests miss.

Limits: no TTL expiry (segments are immutable for a year), no purges, one popularity law for the
whole trace (no daily churn, no new uploads), prefetches complete before the next request, and
the trace is much shorter than a real edge's life, so large caches are bounded by first requests
(the unbounded row)."""


def main(argv: Sequence[str] | None = None) -> None:
    experiment_main("load_tests.analysis.cache", parser(), run, argv)


if __name__ == "__main__":
    main()
