"""Write the demo corpus: a small parallel slice of XQuAD in six languages.

    python bench/make_demo_slice.py DATA_DIR OUT_DIR [--articles 1,4,...] [--paragraphs 3]

DATA_DIR holds ``xquad.<lang>.json`` (SQuAD format) and ``LICENSE-CC-BY-SA-4.0.txt`` from
github.com/deepmind/xquad. OUT_DIR receives ``xquad_slice.jsonl`` (one paragraph per line),
``xquad_questions.jsonl`` (the first question of each paragraph) and a copy of the license.
The text is copied unmodified; only the article title loses its underscores.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

LANGUAGES = ("en", "de", "es", "ru", "zh", "ar")
LICENSE = "LICENSE-CC-BY-SA-4.0.txt"
# Ten varied topics whose first three paragraphs are short (XQuAD article indices): Warsaw,
# Computational complexity theory, Teacher, Martin Luther, Steam engine, 1973 oil crisis,
# Kenya, Chloroplast, Rhine, Scottish Parliament.
DEFAULT_ARTICLES = (1, 4, 5, 6, 11, 13, 37, 39, 41, 42)
TITLE_WORDS = 8


def load(data_dir: Path) -> dict[str, list[dict]]:
    """language -> the articles of its file (same order in every language)."""
    return {
        lang: json.loads((data_dir / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"]
        for lang in LANGUAGES
    }


def english_title(article: dict) -> str:
    """The article's title, or the first words of its first paragraph when it has none."""
    if article.get("title"):
        return article["title"].replace("_", " ")
    return " ".join(article["paragraphs"][0]["context"].split()[:TITLE_WORDS])


def rows(
    data: dict[str, list[dict]], articles: list[int], paragraphs: int
) -> Iterator[tuple[dict, dict]]:
    """(slice row, question row) per article, paragraph and language, in that order."""
    for a in articles:
        title = english_title(data["en"][a])
        for p in range(paragraphs):
            for lang in LANGUAGES:
                paragraph = data[lang][a]["paragraphs"][p]
                external_id = f"{a}-{p}-{lang}"
                qa = paragraph["qas"][0]
                yield (
                    {"external_id": external_id, "language": lang, "title": title,
                     "body": paragraph["context"], "topic": title},
                    {"language": lang, "question": qa["question"], "external_id": external_id,
                     "answer": qa["answers"][0]["text"]},
                )


def write_jsonl(path: Path, items: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the xquad folder")
    parser.add_argument("out_dir", type=Path, help="e.g. example_project/demo/data")
    parser.add_argument(
        "--articles", default=",".join(map(str, DEFAULT_ARTICLES)),
        help="comma-separated XQuAD article indices (0-47)",
    )
    parser.add_argument("--paragraphs", type=int, default=3, help="first N paragraphs of each")
    args = parser.parse_args(argv)

    articles = [int(index) for index in args.articles.split(",")]
    pairs = list(rows(load(args.data_dir), articles, args.paragraphs))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "xquad_slice.jsonl", [row for row, _ in pairs])
    write_jsonl(args.out_dir / "xquad_questions.jsonl", [question for _, question in pairs])
    shutil.copyfile(args.data_dir / LICENSE, args.out_dir / LICENSE)
    size = (args.out_dir / "xquad_slice.jsonl").stat().st_size
    print(f"{len(pairs)} paragraphs and questions written to {args.out_dir} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
