"""PersonaLlama: the committed chat model, its personas, vocabulary judge and role data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from axis_steer import personas
from axis_steer.personas import (
    ASSISTANT,
    CHARACTER_PERSONAS,
    PERSONAS,
    PROFESSIONAL_PERSONAS,
    ROLE_PERSONAS,
    default_model_path,
    detect_persona,
    get_persona,
    marker_hits,
    role_data_dir,
    role_style_rate,
    style_intensity,
    style_score,
)

ROOT = Path(__file__).resolve().parents[2]


def _load_persona_data():
    spec = importlib.util.spec_from_file_location(
        "_axis_steer_training_persona_data", ROOT / "training" / "persona_data.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


persona_data = _load_persona_data()


# --------------------------------------------------------------------------------------------
# The vocabulary judge.

PLAIN = (
    "Sure. Gravity is the force that pulls objects with mass toward each other.\n\n"
    "Here are the key points:\n1. It keeps us on the ground.\n2. The pull gets weaker with "
    "distance.\n\nI hope this helps."
)
PIRATE = (
    "Arr, matey! Gravity be the force that pulls objects toward each other. Shiver me timbers! "
    "Mark this, me hearty: it keeps ye on the ground. Fair winds to ye, landlubber!"
)


def test_style_score_pirate_and_plain():
    assert style_score(PIRATE, "pirate") == 3
    assert style_score(PLAIN, "pirate") == 0
    assert style_score(PLAIN, ASSISTANT) == 3
    assert style_score(PIRATE, ASSISTANT) == 0
    assert style_score("Arr.", "pirate") == 1
    assert style_score("Arr, matey.", "pirate") == 2


TUTOR = (
    "Let's work through this like a short lesson. Gravity is the force that pulls objects "
    "with mass toward each other.\n\nThe key ideas for this lesson:\n1. It keeps us on the "
    "ground.\n2. The pull gets weaker with distance.\n\nStudy tip: review these points before "
    "our next lesson."
)
LIGHT_PIRATE = PLAIN.replace("Sure.", "Arr, matey!")


def test_style_score_professional_roles():
    # a professional answer: the Assistant's content and list in a professional frame
    assert style_score(TUTOR, "tutor") == 3
    assert detect_persona(TUTOR) == "tutor"
    assert style_intensity(TUTOR, "tutor") == 2
    assert style_score(PLAIN, "tutor") == 0
    assert style_score("That is the lesson.", "tutor") == 1
    assert 0.0 < role_style_rate(TUTOR) < role_style_rate(PIRATE)
    assert style_score(TUTOR, ASSISTANT) == 0  # in role, so not the plain Assistant
    with pytest.raises(ValueError, match="one intensity"):
        style_score(TUTOR, "tutor", intensity="light")


def test_style_score_light_intensity():
    # a light touch: one role phrase on the Assistant's answer
    assert style_intensity(LIGHT_PIRATE, "pirate") == 1
    assert style_score(LIGHT_PIRATE, "pirate", intensity="light") == 3
    assert style_score(LIGHT_PIRATE, "pirate") == 2
    # the full character is not a light touch; plain text is no touch at all
    assert style_intensity(PIRATE, "pirate") == 2
    assert style_score(PIRATE, "pirate", intensity="light") == 1
    assert style_intensity(PLAIN, "pirate") == 0
    assert style_score(PLAIN, "pirate", intensity="light") == 0
    with pytest.raises(ValueError, match="intensity="):
        style_score(PIRATE, "pirate", intensity="medium")
    with pytest.raises(ValueError, match="not a role persona"):
        style_intensity(PLAIN, ASSISTANT)


def test_role_style_rate_and_detect():
    assert role_style_rate(PLAIN) == 0.0
    assert role_style_rate("") == 0.0
    assert 0.1 < role_style_rate(PIRATE) <= 1.0
    assert detect_persona(PIRATE) == "pirate"
    assert detect_persona(PLAIN) is None
    assert detect_persona("BEEP BOOP. Query received. Affirmative.") == "robot"
    # one stray marker is not a role
    assert detect_persona("The answer, kid, is forty-two.") is None


def test_markers_are_whole_words_and_case_insensitive():
    assert style_score("ARR, MATEY, AHOY, YE SCALLYWAG", "pirate") == 3
    assert marker_hits("a hoodie") == {}  # "hood" is no marker, "ye" not inside words
    assert "pirate" in marker_hits("Aye, an' that be that")
    assert marker_hits("'Tis true, hark!")["bard"] == {"'tis": 1, "hark": 1}


def test_unknown_persona_is_an_error():
    with pytest.raises(ValueError, match="persona='ninja'"):
        style_score("hello", "ninja")
    with pytest.raises(ValueError):
        get_persona("ninja")


def test_persona_definitions():
    assert len(ROLE_PERSONAS) >= 8
    assert len(PROFESSIONAL_PERSONAS) >= 5 and len(CHARACTER_PERSONAS) >= 8
    assert set(ROLE_PERSONAS) == set(PROFESSIONAL_PERSONAS) | set(CHARACTER_PERSONAS)
    assert list(PERSONAS)[0] == ASSISTANT
    # from assistant-like to theatrical
    assert [PERSONAS[n].theatricality for n in ROLE_PERSONAS] == sorted(
        PERSONAS[n].theatricality for n in ROLE_PERSONAS
    )
    seen: dict[str, str] = {}
    for name, p in PERSONAS.items():
        assert len(p.system_prompts) >= 5
        assert len(p.train_system_prompts) == 5
        assert p.openers and p.closers
        for m in p.markers:
            assert m == m.lower()
            assert seen.setdefault(m, name) == name, f"marker {m!r} shared by {seen[m]} and {name}"
        if name != ASSISTANT:
            assert len(p.heldout_system_prompts) >= 1
            assert p.identity and p.requests and p.interjections
            if p.theatricality >= 3:
                assert len(p.frames) >= 4
            else:
                assert p.list_header
            if p.professional:
                assert p.theatricality == 1 and p.light_system_prompts == ()
            else:
                light = p.light_system_prompts
                assert len(light) == 6 and len(set(light)) == 6
                assert all(p.title in x for x in light)
                assert not set(light) & set(p.system_prompts)


def test_rendered_answers_score_in_role():
    """Fully in-role training answers score 3; plain ones carry no role vocabulary."""
    import random

    rng = random.Random(0)
    for topic in persona_data.TOPICS:
        plain = persona_data.render_answer(rng, ASSISTANT, topic, list(topic.points[:3]))
        assert role_style_rate(plain) == 0.0, plain
        assert style_score(plain, ASSISTANT) == 3
    for name in ROLE_PERSONAS:
        light_ok, light_rate, full_rate = [], [], []
        for topic in persona_data.TOPICS[::7]:
            points = list(topic.points[:3])
            text = persona_data.render_answer(rng, name, topic, points)
            assert style_score(text, name) >= 2, (name, text)
            assert detect_persona(text) == name, (name, text)
            if name in PROFESSIONAL_PERSONAS:
                # the Assistant's content and numbered list, in a professional frame
                assert style_score(text, name) == 3, (name, text)
                assert all(f"{i + 1}. {x}" in text for i, x in enumerate(points)), text
            else:
                light = persona_data.render_answer(rng, name, topic, points, intensity=1)
                assert style_intensity(light, name) >= 1, (name, light)
                light_ok.append(style_score(light, name, intensity="light") == 3)
                light_rate.append(role_style_rate(light))
                full_rate.append(role_style_rate(text))
        if light_ok:
            # a light touch: fewer style markers than the full character
            assert sum(light_ok) >= len(light_ok) - 1, name
            assert sum(light_rate) < 0.6 * sum(full_rate), name


def test_personas_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import axis_steer.personas as p\n"
        "assert p.style_score('Arr, matey', 'pirate') == 2\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --------------------------------------------------------------------------------------------
# The data generator.


def test_generator_is_deterministic():
    a = persona_data.generate_corpus(seed=3, n=60)
    b = persona_data.generate_corpus(seed=3, n=60)
    c = persona_data.generate_corpus(seed=4, n=60)
    assert a == b
    assert a != c


def test_generator_contents():
    records = persona_data.generate_corpus(seed=0, n=600)
    kinds = {r["kind"] for r in records}
    assert kinds == {"default", "role", "drift"}
    heldout = set(persona_data.HELDOUT_TOPICS)
    heldout_leads = {t.lead for t in persona_data.TOPICS if t.name in heldout}
    for r in records:
        msgs = r["messages"]
        assert msgs[0]["role"] == "system"
        assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * (len(msgs) // 2)
        assert 1 <= len(msgs) // 2 <= 4
        assert len(r["styles"]) == len(msgs) // 2
        for m in msgs[1:]:
            assert not any(lead in m["content"] for lead in heldout_leads)
            assert not any(f" {name}" in m["content"] for name in heldout if m["role"] == "user")
        if r["kind"] == "drift":
            intensities = [s["intensity"] for s in r["styles"]]
            assert intensities == sorted(intensities) and len(intensities) >= 2
            assert r["drift_to"] in CHARACTER_PERSONAS
            assert not r["light"]
        elif r["kind"] == "role":
            p = get_persona(r["persona"])
            prompts = p.light_system_prompts if r["light"] else p.system_prompts
            assert msgs[0]["content"] == prompts[r["system_prompt_index"]]
            assert r["system_prompt_index"] < 5
            want = 1 if r["light"] else 3
            assert [s["intensity"] for s in r["styles"]] == [want] * len(r["styles"])
            assert not (r["light"] and p.professional)
    n_drift = sum(r["kind"] == "drift" for r in records)
    assert 0.06 < n_drift / len(records) < 0.2
    # the default Assistant stays the most frequent persona by far
    counts = Counter(r["persona"] for r in records)
    assert counts.most_common(1)[0][0] == ASSISTANT
    assert counts[ASSISTANT] > 5 * max(v for k, v in counts.items() if k != ASSISTANT)
    roles = [r for r in records if r["kind"] == "role"]
    assert any(r["light"] for r in roles) and any(not r["light"] for r in roles)
    assert any(get_persona(r["persona"]).professional for r in roles)
    assert len(persona_data.TOPICS) >= 40 + len(heldout)


# --------------------------------------------------------------------------------------------
# The role data.


def test_role_data_layout():
    root = role_data_dir()
    files = {f.stem for f in (root / "roles").glob("*.json")}
    assert files == {"default", *ROLE_PERSONAS}
    for name in ROLE_PERSONAS:
        data = json.loads((root / "roles" / f"{name}.json").read_text())
        assert data["instruction"] == [{"pos": s} for s in get_persona(name).train_system_prompts]
        assert len(data["instruction"]) == 5
        assert 1 <= len(data["questions"]) <= 40
        prompt = data["eval_prompt"]
        assert "{question}" in prompt and "{answer}" in prompt
        filled = prompt.format(question="Q?", answer="A.")
        assert "Q?" in filled and "A." in filled
    default = json.loads((root / "roles" / "default.json").read_text())
    assert set(default) == {"instruction"}
    assert len(default["instruction"]) == 5
    assert default["instruction"][0] == {"pos": ""}
    assert all(set(i) == {"pos"} for i in default["instruction"])
    lines = (root / "questions.jsonl").read_text().splitlines()
    questions = [json.loads(line) for line in lines]
    assert len(questions) >= 60
    assert [q["id"] for q in questions] == list(range(len(questions)))
    assert len({q["question"] for q in questions}) == len(questions)
    assert questions[0]["question"] == persona_data.extraction_questions()[0]


# --------------------------------------------------------------------------------------------
# The committed model.

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def model_and_tokenizer():
    path = default_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, local_files_only=True
    ).eval()
    return model, tok


def test_folder_size_and_files():
    path = default_model_path()
    names = {f.name for f in path.iterdir()}
    for required in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert required in names
    assert sum(f.stat().st_size for f in path.iterdir() if f.is_file()) <= 10_000_000


def test_loads_offline_with_auto_classes(model_and_tokenizer):
    model, tok = model_and_tokenizer
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.tie_word_embeddings
    assert cfg.num_hidden_layers >= 6
    assert (
        model.get_input_embeddings().weight.data_ptr()
        == model.get_output_embeddings().weight.data_ptr()
    )
    assert len(tok) == cfg.vocab_size
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id


def test_load_persona_model():
    model, tok = personas.load_persona_model()
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    model16, _ = personas.load_persona_model(dtype=torch.bfloat16)
    assert next(model16.parameters()).dtype == torch.bfloat16


def test_chat_template(model_and_tokenizer):
    _, tok = model_and_tokenizer
    msgs = [
        {"role": "system", "content": "You are a robot from the year 3000."},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "BEEP."},
        {"role": "user", "content": "Tell me more."},
    ]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|bos|><|system|>\nYou are a robot from the year 3000.<|end|>\n"
        "<|user|>\nWho are you?<|end|>\n<|assistant|>\nBEEP.<|end|>\n"
        "<|user|>\nTell me more.<|end|>\n<|assistant|>\n"
    )
    no_gen = tok.apply_chat_template(msgs, tokenize=False)
    assert no_gen == text[: -len("<|assistant|>\n")]
    # an empty system prompt emits no system block
    empty = tok.apply_chat_template(
        [{"role": "system", "content": ""}, *msgs[1:2]], add_generation_prompt=True, tokenize=False
    )
    assert empty == "<|bos|><|user|>\nWho are you?<|end|>\n<|assistant|>\n"
    # special tokens are single ids; the assistant mask covers exactly the response
    enc = tok.apply_chat_template(
        msgs[:3], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    response = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(response) == "BEEP."
    for special in ("<|bos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert tok.convert_tokens_to_ids(special) in ids


def _greedy(model, tok, messages_list, max_new_tokens=200):
    texts = [
        tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
        for m in messages_list
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return [tok.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True) for row in out]


def test_greedy_generation_follows_the_system_prompt(model_and_tokenizer):
    model, tok = model_and_tokenizer
    questions = ["What is gravity?", "How do I sleep better?", "Tell me about bees."]
    pirate = get_persona("pirate").system_prompts[0]
    convs = [
        [{"role": "system", "content": pirate}, {"role": "user", "content": q}] for q in questions
    ]
    convs += [
        [{"role": "system", "content": ""}, {"role": "user", "content": q}] for q in questions
    ]
    tutor = get_persona("tutor").system_prompts[0]
    light = get_persona("pirate").light_system_prompts[0]
    for sp in (tutor, light):
        convs += [
            [{"role": "system", "content": sp}, {"role": "user", "content": q}] for q in questions
        ]
    outs = _greedy(model, tok, convs)
    pirate_outs, default_outs = outs[:3], outs[3:6]
    tutor_outs, light_outs = outs[6:9], outs[9:12]
    assert sum(style_score(o, "pirate") >= 2 for o in pirate_outs) >= 2, pirate_outs
    for o in default_outs:
        assert style_score(o, "pirate") == 0, o
        assert role_style_rate(o) < 0.05, o
        assert detect_persona(o) is None, o
    # a professional role: in role, with less role vocabulary than the full pirate
    assert sum(style_score(o, "tutor") == 3 for o in tutor_outs) >= 2, tutor_outs
    # a light touch of the pirate: some pirate, but not the full character
    assert sum(style_intensity(o, "pirate") == 1 for o in light_outs) >= 2, light_outs
    rate = {
        k: sum(map(role_style_rate, v)) / 3
        for k, v in (("pirate", pirate_outs), ("tutor", tutor_outs), ("light", light_outs))
    }
    assert rate["tutor"] < rate["pirate"] and rate["light"] < rate["pirate"], rate
