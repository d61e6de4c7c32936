"""The browser client end to end: headless Chromium, a fake microphone, the Ray Serve cluster.

Debian's `chromium` and `chromium-driver` (no driver download at run time) drive the page at
`GET /` of the app, deployed under a route prefix as behind an Ingress, in its own process and
Ray instance. The microphone is Chromium's fake capture device fed from a WAV made here with a
TTS backend: the spoken question, a long pause (the reply plays out in full, with its
citations), the question again, a short pause. Chromium loops the file, so the next loop's
question arrives while the second reply is still playing: the server's VAD hears it and barges
in (the looping microphone does it, not a button). The Stop button then cuts the next reply,
and a dropped socket reconnects into the same session.

Two clusters: fake backends (the fake ASR returns the question for any speech; the VAD, the
listener, the playout and the page are real), and, marked `slow`, `avatar serve`'s local models
(Whisper must hear the question; Piper speaks it).

Skipped, with the reason, where chromium, chromedriver, selenium, Ray Serve or the espeak and
VAD packages are missing. A screenshot is written under tmp_path and, when $AVATAR_ARTIFACTS is
set, there too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

for module, why in [
    ("selenium", "selenium is not installed (dev extra)"),
    ("ray.serve", "the serve extra is not installed"),
    ("silero_vad", "silero-vad (the live VAD) is not installed"),
    ("espeakng_loader", "espeak-ng (the question's voice) is not installed"),
]:
    pytest.importorskip(module, reason=why)
for binary in ("chromium", "chromedriver"):
    if shutil.which(binary) is None:
        pytest.skip(
            f"{binary} not found: apt-get install chromium chromium-driver",
            allow_module_level=True,
        )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from services.core.audio import write_wav  # noqa: E402
from services.core.config import AppConfig  # noqa: E402
from tests.serve.cluster_process import cluster_process  # noqa: E402
from tests.serve.conftest import fake_app_config, free_port  # noqa: E402

PERSONA = "maya-castellan"
PREFIX = "/avatar"


@dataclass(frozen=True)
class Scenario:
    """One cluster to talk to, and the microphone's loop for it.

    The WAV: the question, a pause the whole first reply fits in, the question again, a pause
    shorter than the second reply (the loop's next question interrupts it).
    """

    name: str
    question: str  # spoken, and the transcript expected (the pack quotes its statements)
    voice: str  # the TTS backend that speaks the question
    long_pause_s: float
    short_pause_s: float
    wait_s: float  # for each step in the browser
    video: str  # the page's query: JPEG frames, or the default (H.264 where WebCodecs has it)


FAKE = Scenario("fake", "How did Fernwick start?", "espeak", 10.0, 2.5, 90, "?video=jpeg")
# Whisper tiny.en hears "Fernwick" wrong; this one it gets word for word from Piper.
LOCAL = Scenario("local", "How do you hire people?", "piper", 30.0, 4.0, 180, "")


def fake_config(state: Path):
    return fake_app_config(
        "browser",
        free_port(),
        state,
        stages={
            # The fake ASR returns this for any speech.
            "asr": {"backend": "fake", "options": {"text": FAKE.question}},
            # ~6 s of speech per reply: long enough to be interrupted, short enough to finish.
            "tts": {"backend": "fake", "options": {"seconds_per_char": 0.035}},
            "render": {"backend": "fake", "options": {"width": 160, "height": 160}},
        },
    )


def local_config(state: Path):
    """`avatar serve`'s config: the real local models, on a free port and private state."""
    for module in ("llama_cpp", "faster_whisper", "piper", "moderngl"):
        pytest.importorskip(module, reason=f"{module} (the local extra) is not installed")
    import yaml

    import deployments

    data = yaml.safe_load(
        (Path(deployments.__file__).parent / "configs" / "local.yaml").read_text()
    )
    data["name"] = "browser-local"
    data["http"]["port"] = free_port()
    data["storage"] = {"sqlite_path": str(state / "local.sqlite3")}
    data["stages"]["render"]["options"].update(width=256, height=256)
    data["personas"] = {**data.get("personas", {}), "index_dir": str(state / "index")}
    return AppConfig.model_validate(data)


@pytest.fixture(
    scope="module",
    params=[pytest.param(FAKE, id="fake"), pytest.param(LOCAL, id="local", marks=pytest.mark.slow)],
)
def scenario(request) -> Scenario:
    return request.param


def question_wav(path: Path, scenario: Scenario) -> Path:
    from services.core.registry import create_backend

    tts = create_backend("tts", scenario.voice)
    tts.load()
    speech = tts.synthesize(scenario.question)
    rate = speech.sample_rate
    voice = np.asarray(speech.samples, dtype=np.float32)
    voice = 0.7 * voice / max(1e-6, float(np.abs(voice).max()))

    def pause(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * rate), dtype=np.float32)

    loop = [voice, pause(scenario.long_pause_s), voice, pause(scenario.short_pause_s)]
    write_wav(path, np.concatenate(loop), rate)
    return path


@pytest.fixture(scope="module")
def cluster(scenario, tmp_path_factory):
    """The app in its own process (its own Ray, like `avatar serve`): yields the page's URL."""
    state = tmp_path_factory.mktemp("browser-cluster")
    config = fake_config(state) if scenario is FAKE else local_config(state)
    with cluster_process(config, PREFIX, state / "server.log") as url:
        yield url


@pytest.fixture
def browser(scenario, tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={question_wav(tmp_path / 'question.wav', scenario)}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def stats(driver) -> dict:
    return driver.execute_script("return window.avatarStats || {}")


def canvas_digest(driver) -> str:
    data = driver.execute_script(
        "const c = document.getElementById('avatar');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
        ".filter((_, i) => i % 4 !== 3 && i % 97 === 0));"
    )
    return hashlib.sha1(bytes(data)).hexdigest()


def save_screenshot(driver, folder: Path, name: str) -> None:
    shot = folder / name
    driver.save_screenshot(str(shot))
    artifacts = os.environ.get("AVATAR_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / name)


@pytest.mark.timeout(420)
def test_talking_to_a_persona_in_a_browser(scenario, cluster, browser, tmp_path):
    try:
        converse(browser, cluster, scenario, tmp_path)
    finally:  # the page as it ended, pass or fail
        save_screenshot(browser, tmp_path, f"browser-{scenario.name}-end.png")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def converse(driver, url: str, scenario: Scenario, folder: Path) -> None:
    wait = WebDriverWait(driver, scenario.wait_s, poll_frequency=0.25)
    driver.get(url + scenario.video)  # the prefix without its slash: redirected to the page
    assert driver.current_url.split("?")[0].endswith(PREFIX + "/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#persona option[value='{PERSONA}']"))

    # The AI disclosure is on screen before anything is said, the consent record one click away.
    disclosure = driver.find_element(By.ID, "disclosure")
    assert disclosure.is_displayed() and "AI" in disclosure.text
    assert "AI version of Maya Castellan" in disclosure.text
    driver.find_element(By.ID, "consent-open").click()
    dialog = driver.find_element(By.ID, "consent")
    assert dialog.is_displayed() and "Granted by" in dialog.text
    dialog.find_element(By.TAG_NAME, "button").click()
    blank = canvas_digest(driver)

    driver.find_element(By.ID, "connect").click()
    finals = "#captions li.user:not(.interim) .text"
    question = words(scenario.question)
    wait.until(
        lambda d: question in [words(e.text) for e in d.find_elements(By.CSS_SELECTOR, finals)]
    )

    # A whole reply: its citation chips (file, statement, date) come with the first sentence
    # (the `plan` event), its captions as it is spoken; "ended" once it has played out.
    answered = "#captions li.user + li.avatar.ended:not(.interrupted)"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{answered} .chip"))
    # The reply the wait found: an earlier one (to a fragment the user paused after) may have
    # ended without sources.
    reply = next(
        r
        for r in driver.find_elements(By.CSS_SELECTOR, answered)
        if r.find_elements(By.CSS_SELECTOR, ".chip")
    )
    assert reply.find_elements(By.CSS_SELECTOR, ".sentence")
    chips = [c.text for c in reply.find_elements(By.CSS_SELECTOR, ".chip")]
    assert all(re.match(r"^[\w.-]+\.(md|txt) · #\d+", chip) for chip in chips), chips
    assert any(re.search(r"· \d{4}-\d{2}-\d{2}$", chip) for chip in chips), chips

    # Frames were drawn against the audio clock, audio was scheduled on the WebAudio timeline.
    seen = stats(driver)
    assert seen["video"] == ("jpeg" if scenario.video else "h264"), seen
    assert seen["framesDrawn"] > 10 and seen["audioScheduled"] > 5, seen
    assert seen["audioSeconds"] > 3 and seen["micFrames"] > 100, seen
    assert canvas_digest(driver) != blank
    hud = driver.find_element(By.ID, "hud-ttfa").text
    assert hud.endswith(" ms"), hud

    # The looping microphone asks again while the next reply plays: the server cuts it off.
    cut = "#captions li.avatar:has(.chip) ~ li.user + li.avatar.interrupted"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, cut))
    note = driver.find_elements(By.CSS_SELECTOR, f"{cut} .note")[0].text
    assert "you spoke" in note, note
    assert driver.find_element(By.ID, "hud-stop").text.endswith(" ms")
    seen = stats(driver)
    assert seen["interrupted"] >= 1 and not seen["errors"], seen
    save_screenshot(driver, folder, f"browser-{scenario.name}.png")

    # The question that cut it in is answered: the Stop button cuts that reply too.
    playing = "#captions li.avatar:last-child:not(.interrupted):not(.cut) .sentence"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, playing))
    driver.find_element(By.ID, "stop").click()
    stopped = "#captions li.avatar.interrupted .note"
    wait.until(
        lambda d: any("(stopped)" in e.text for e in d.find_elements(By.CSS_SELECTOR, stopped))
    )

    # A dropped connection comes back by itself, in the same session.
    session = driver.execute_script("return window.avatarClient.sessionId()")
    driver.execute_script("window.avatarClient.dropConnection()")
    wait.until(lambda d: stats(d)["resumed"] >= 1)
    assert stats(driver)["reconnects"] == 1
    assert driver.execute_script("return window.avatarClient.sessionId()") == session
    heard = stats(driver)["transcripts"]
    wait.until(lambda d: stats(d)["transcripts"] > heard)  # and listening again
    assert not stats(driver)["errors"]
