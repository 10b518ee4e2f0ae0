"""Prefix sharing between consecutive turns of one conversation, before and after the prefix-stable layout.

Run with `make bench-prefix` (or `python bench/prefix.py`). A model server's prefix cache (vLLM's
automatic prefix caching) reuses the KV blocks of the longest token prefix a prompt shares with
an earlier one; for a conversation, that is what turn N+1 shares with turn N. This measures it on
the demo: the agents and knowledge of `seed_demo`, and as conversations the demo's labelled
questions (agents/demo/queries.json) grouped by the document they are about, asked in order as
follow-ups in one conversation (groups of two or more). Each turn runs the real chat service
(`open_turn`, the extractive backend, the answer stored, so the next turn's history holds it);
its prompt is built from the same chunks, history and question in both layouts:
`context-first` ([system][context][history][question], the former layout) and `prefix-stable`
([system][history][context][question], the current one).

Shared-prefix ratio: tokens turn N+1 shares with turn N from the start, over turn N+1's length;
reported per agent as the mean over pairs and weighted by tokens (what a server would reuse).
Exits 1 unless the prefix-stable layout shares more than the former one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from environment import bench_environment  # noqa: E402

TURNS = 5


def main() -> int:
    from tests.redis_process import RedisProcess

    redis_server = RedisProcess(maxmemory="256mb").start()
    try:
        with tempfile.TemporaryDirectory(prefix="tokencache-bench-prefix-") as directory:
            os.environ.update(bench_environment(Path(directory), redis_server.url(0)))
            return measure()
    finally:
        redis_server.stop()


def measure() -> int:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from agents import chat
    from agents.management.commands.seed_demo import DEMO_KNOWLEDGE_DIR
    from agents.models import Agent
    from agents.prompt import Layout, build_prompt, shared_prefix
    from cachecore.tokenizers import get_tokenizer

    call_command("migrate", verbosity=0)
    call_command("seed_demo", verbosity=0)
    user = User.objects.filter(is_superuser=True).get()
    queries = json.loads((DEMO_KNOWLEDGE_DIR / "queries.json").read_text(encoding="utf-8"))

    # agent -> layout -> [(shared, length of the later prompt)]
    pairs: dict[str, dict[Layout, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    conversations: dict[str, int] = defaultdict(int)
    started = time.perf_counter()
    for slug, labelled in queries.items():
        agent = Agent.objects.select_related("ttl_policy").get(slug=slug)
        tokenizer = get_tokenizer(agent.tokenizer_spec)
        asked = [item["query"] for item in labelled]
        # Follow-ups about one document, and runs of TURNS questions in the file's order (mostly a
        # few questions about one document, then the next): a short and a longer conversation.
        by_source: dict[str, list[str]] = defaultdict(list)
        for item in labelled:
            by_source[item["source"]].append(item["query"])
        groups = [("follow-ups", q) for q in by_source.values()]
        groups += [(f"{TURNS} turns", asked[n : n + TURNS]) for n in range(0, len(asked), TURNS)]
        for kind, questions in groups:
            if len(questions) < 2:
                continue
            slug_kind = f"{slug}, {kind}"
            conversations[slug_kind] += 1
            conversation = None
            previous: dict[Layout, list[int]] = {}
            for question in questions:
                turn = chat.open_turn(user=user, agent=agent, message=question, conversation=conversation)
                conversation = turn.conversation
                history = chat._stored_history(conversation=conversation, before=turn.user_message)
                for layout in Layout:
                    ids = build_prompt(
                        tokenizer=tokenizer,
                        system_prompt=agent.system_prompt,
                        chunks=turn.chunks,
                        history=history,
                        question=question,
                        budget=agent.prompt_token_budget,
                        layout=layout,
                    ).token_ids.tolist()
                    if layout in previous:
                        pairs[slug_kind][layout].append((shared_prefix(previous[layout], ids), len(ids)))
                    previous[layout] = ids
                generation = turn.backend.generate(turn.prompt, max_tokens=turn.max_tokens, temperature=0.0)
                turn.finish(generation, generation_ms=0.0)

    def mean(values: list[tuple[int, int]]) -> float:
        return sum(s / n for s, n in values) / len(values) if values else float("nan")

    def weighted(values: list[tuple[int, int]]) -> float:
        return sum(s for s, _ in values) / max(1, sum(n for _, n in values))

    lines = [
        "| agent, conversations | count | turn pairs | context-first: mean / by tokens | "
        "prefix-stable: mean / by tokens | ratio (by tokens) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    everything: dict[Layout, list[tuple[int, int]]] = defaultdict(list)
    for slug, by_layout in sorted(pairs.items()):
        before, after = by_layout[Layout.CONTEXT_FIRST], by_layout[Layout.PREFIX_STABLE]
        everything[Layout.CONTEXT_FIRST] += before
        everything[Layout.PREFIX_STABLE] += after
        lines.append(
            f"| {slug} | {conversations[slug]} | {len(after)} | {mean(before):.1%} / {weighted(before):.1%} | "
            f"{mean(after):.1%} / {weighted(after):.1%} | x{weighted(after) / max(weighted(before), 1e-9):.2f} |"
        )
    before, after = everything[Layout.CONTEXT_FIRST], everything[Layout.PREFIX_STABLE]
    lines.append(
        f"| all | {sum(conversations.values())} | {len(after)} | {mean(before):.1%} / {weighted(before):.1%} | "
        f"{mean(after):.1%} / {weighted(after):.1%} | x{weighted(after) / max(weighted(before), 1e-9):.2f} |"
    )
    met = weighted(after) > weighted(before)
    markdown = (
        "## Prefix sharing between consecutive turns\n\n"
        "`python bench/prefix.py`: the demo's labelled questions as conversations (follow-ups about one document; "
        f"runs of {TURNS} in order), each turn's prompt built in both layouts from the same chunks, history "
        "and question; "
        f"shared prefix of turn N+1 with turn N over turn N+1's tokens ({time.perf_counter() - started:.0f} s).\n\n"
        + "\n".join(lines)
        + f"\n\n- {'met' if met else 'MISSED'}: the prefix-stable layout shares more than the former one.\n"
    )
    print(markdown)
    from report import write_section

    write_section("prefix", markdown)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
