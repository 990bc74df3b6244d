"""Fine-tune a configured embedder on this project's data and write a new model folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError

from semantic_search import conf, training
from semantic_search.beir import EvaluationInputError, read_qrels, read_queries
from semantic_search.embedders import SentenceTransformerEmbedder, get_embedder
from semantic_search.registry import NotRegistered, get_registration


class Command(BaseCommand):
    help = (
        "Fine-tune an embedder (MultipleNegativesRankingLoss, hard negatives from today's "
        "search) on judged pairs (--queries/--qrels) or on two fields of the model's own "
        "objects (--fields title:body, no labels needed), and write a new model folder."
    )

    def add_arguments(self, parser):
        defaults = training.TrainingOptions()
        parser.add_argument("embedder", help="a name from SEMANTIC_SEARCH['EMBEDDERS']")
        parser.add_argument("--model", required=True,
                            help="app_label.Model: the registered model whose objects are the "
                                 "documents")
        parser.add_argument("--output", required=True, type=Path,
                            help="folder for the fine-tuned model (new or empty)")
        source = parser.add_argument_group("training pairs (one of)")
        source.add_argument("--queries", type=Path, help="BEIR queries.jsonl")
        source.add_argument("--qrels", type=Path, help="BEIR qrels TSV (corpus ids: see "
                            "--id-field)")
        source.add_argument("--fields", metavar="ANCHOR:POSITIVE",
                            help="two fields of the model (lookups like author__name work), "
                                 "e.g. title:summary")
        parser.add_argument("--id-field", default="pk",
                            help="the model field the qrels' corpus ids are (default: pk)")
        parser.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                            help="only objects with this field value (repeatable)")
        parser.add_argument("--epochs", type=int, default=defaults.epochs)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument("--max-length", type=int, default=defaults.max_length,
                            help="tokens per text")
        parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
        parser.add_argument("--hard-negatives", type=int, default=defaults.hard_negatives,
                            help="per pair, from the top of today's search (0: in-batch only)")
        parser.add_argument("--held-out", type=float, default=defaults.held_out_share,
                            help="share of the queries kept out of training, for the "
                                 "before/after metric")
        parser.add_argument("--max-pairs", type=int, default=None,
                            help="train on at most this many pairs (a random sample): a time "
                                 "budget for large models")
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--reranker", action="store_true",
                            help="train a cross-encoder for RERANKER (starting from the "
                                 "embedder's weights) instead of the embedder")
        parser.add_argument("--dry-run", action="store_true",
                            help="build the pairs, estimate the time, train nothing")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, **options):
        embedder = self._embedder(options["embedder"])
        queryset, registration = self._documents_queryset(options["model"], options["filter"])
        output = options["output"]
        if output.exists() and any(output.iterdir()):
            raise CommandError(f"{output} is not empty: choose a new folder for the model")
        settings = training.TrainingOptions(
            epochs=options["epochs"], batch_size=options["batch_size"],
            max_length=options["max_length"], learning_rate=options["learning_rate"],
            hard_negatives=options["hard_negatives"], held_out_share=options["held_out"],
            seed=options["seed"],
        )
        self._check(settings)
        documents, examples = self._examples(queryset, registration, options)
        if options["max_pairs"] is not None:
            if options["max_pairs"] < 2:
                raise CommandError("--max-pairs must be at least 2")
            examples = training.sample(examples, options["max_pairs"], options["seed"])
        train, held_out = training.split_by_query(examples, settings.held_out_share,
                                                  settings.seed)
        self.stdout.write(
            f"{len(examples)} pairs from {len({e.query_id for e in examples})} queries over "
            f"{len(documents)} documents: {len(train)} to train on, {len(held_out)} held out"
        )
        id_field = "pk" if options["fields"] else options["id_field"]

        def ranked(text: str) -> list[str]:
            hits = queryset.semantic_search(text).values_list(id_field, flat=True)[:10]
            return [str(hit) for hit in hits]

        train = training.with_hard_negatives(train, ranked, documents, settings.hard_negatives,
                                             settings.seed)
        if options["reranker"]:
            self._train_reranker(embedder, train, settings, output, options)
            if not options["dry_run"]:
                self._choose_blend(output, held_out, documents, queryset, id_field)
            return
        prefixes = (embedder.query_prefix, embedder.passage_prefix)
        seconds, steps = training.estimate_seconds(embedder.path, prefixes, train, settings)
        self.stdout.write(f"{steps} steps of {settings.batch_size} pairs, about "
                          f"{seconds / 60:.1f} min on this machine (plus encoding the "
                          f"documents twice for the held-out metric)")
        if options["dry_run"]:
            return
        before = self._held_out_ndcg(embedder, held_out, documents)
        marker = {
            "base": embedder.version, "embedder": embedder.name,
            "trained_at": datetime.now(UTC).isoformat(),
            "pairs": len(train), "options": settings.__dict__,
            "source": f"fields {options['fields']}" if options["fields"] else "judgments",
        }
        steps, seconds = training.train(embedder.path, prefixes, train, settings, output,
                                        marker, progress=not options["no_progress"])
        tuned = SentenceTransformerEmbedder(
            embedder.name, str(output), query_prefix=embedder.query_prefix,
            passage_prefix=embedder.passage_prefix, local_files_only=True,
        )
        after = self._held_out_ndcg(tuned, held_out, documents)
        report = training.TrainingReport(
            str(output), embedder.version, len(train), len({e.query_id for e in held_out}),
            steps, round(seconds, 1), round(training.peak_rss_mb(), 1), before, after,
            settings.__dict__,
        )
        (output / "training-report.json").write_text(training.report_json(report) + "\n")
        self.stdout.write(
            f"trained in {seconds / 60:.1f} min, peak memory {report.peak_rss_mb:.0f} MB\n"
            f"held-out nDCG@10 (embedder {embedder.name!r} alone): "
            f"{_number(before)} before -> {_number(after)} after\n"
            f"new version {tuned.version}: set SEMANTIC_SEARCH['EMBEDDERS']"
            f"[{embedder.name!r}]['MODEL'] = {str(output)!r}, then run "
            "`manage.py semantic_search_reindex` (searches read the old version until the new "
            "vectors are complete)"
        )

    def _train_reranker(self, embedder, train, settings, output, options) -> None:
        pairs = training.reranker_pairs(train)
        steps = settings.epochs * -(-len(pairs) // settings.batch_size)
        self.stdout.write(f"reranker: {len(pairs)} (query, text) pairs, {steps} steps of "
                          f"{settings.batch_size}")
        if options["dry_run"]:
            return
        marker = {"base": embedder.version, "embedder": embedder.name,
                  "trained_at": datetime.now(UTC).isoformat(), "pairs": len(pairs),
                  "options": settings.__dict__}
        try:
            steps, seconds = training.train_reranker(embedder.path, train, settings, output,
                                                     marker, progress=not options["no_progress"])
        except training.TrainingInputError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(
            f"trained in {seconds / 60:.1f} min ({steps} steps), peak memory "
            f"{training.peak_rss_mb():.0f} MB\nset SEMANTIC_SEARCH['RERANKER'] = "
            f"{{'MODEL': {str(output)!r}}} and search with rerank=True"
        )

    def _choose_blend(self, output, held_out, documents, queryset, id_field) -> None:
        """Score the held-out queries' first stage with the trained reranker, and write the
        blend weight that ranks them best into the folder's marker (reranking.blend)."""
        from semantic_search import reranking

        marker_path = output / training.MARKER
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        # Scored as searches will score them (the RERANKER setting's TOP_N, lengths, batches).
        settings = {**reranking.DEFAULTS, **(conf.get("RERANKER") or {}),
                    "MODEL": str(output), "LOCAL_FILES_ONLY": True}
        top_n = int(settings["TOP_N"])
        model = reranking.load(settings)
        queries = []
        for _, anchor, relevant in training.held_out_queries(held_out):
            hits = list(queryset.semantic_search(anchor).values_list(id_field, "search_score")
                        [:top_n])
            ids = [str(key) for key, _ in hits]
            scores = reranking.predict(model, anchor, [documents.get(key, "") for key in ids],
                                       settings) if ids else []
            queries.append(training.RerankedQuery(
                tuple(ids), tuple(float(score) for _, score in hits), tuple(scores), relevant,
            ))
        weight, by_weight = training.choose_blend(queries)
        marker.update(blend=weight, held_out_ndcg=by_weight, held_out_queries=len(queries))
        marker_path.write_text(json.dumps(marker, indent=2, default=str) + "\n",
                               encoding="utf-8")
        if not queries:
            self.stdout.write("no held-out queries: the reranker's order is used alone "
                              "(blend 1.0)")
            return
        self.stdout.write(
            f"held-out nDCG@10 over the first {top_n} of {len(queries)} queries: fused "
            f"{by_weight[0.0]:.4f}, reranker alone {by_weight[1.0]:.4f}, chosen blend "
            f"{weight} -> {by_weight[weight]:.4f} (written to {marker_path.name})"
        )

    def _embedder(self, name: str) -> SentenceTransformerEmbedder:
        try:
            embedder = get_embedder(name)
        except KeyError as error:
            raise CommandError(f"no embedder {name!r} in SEMANTIC_SEARCH['EMBEDDERS']") from error
        if not isinstance(embedder, SentenceTransformerEmbedder):
            raise CommandError(f"embedder {name!r} is not a sentence-transformers model; only "
                               "those can be fine-tuned")
        return embedder

    @staticmethod
    def _check(settings: training.TrainingOptions) -> None:
        if settings.epochs < 1 or settings.batch_size < 2 or settings.max_length < 8:
            raise CommandError("--epochs must be >= 1, --batch-size >= 2 (in-batch negatives), "
                               "--max-length >= 8")
        if not 0 < settings.learning_rate < 1 or settings.hard_negatives < 0:
            raise CommandError("--learning-rate must be in (0, 1), --hard-negatives >= 0")
        if not 0 <= settings.held_out_share < 1:
            raise CommandError("--held-out must be in [0, 1)")

    def _documents_queryset(self, label: str, filters: list[str]):
        try:
            model = apps.get_model(label)
            registration = get_registration(model)
        except (LookupError, ValueError, NotRegistered) as error:
            raise CommandError(f"{label}: {error}") from error
        conditions = {}
        for condition in filters:
            field, sep, value = condition.partition("=")
            if not sep:
                raise CommandError(f"--filter {condition!r}: expected FIELD=VALUE")
            conditions[field] = value
        return model._default_manager.filter(**conditions), registration

    def _examples(self, queryset, registration, options):
        if options["fields"]:
            if options["queries"] or options["qrels"]:
                raise CommandError("give either --fields or --queries/--qrels, not both")
            anchor, sep, positive = options["fields"].partition(":")
            if not sep or not anchor or not positive:
                raise CommandError("--fields must be ANCHOR:POSITIVE, e.g. title:summary")
            try:
                rows = [(str(pk), a, p) for pk, a, p in
                        queryset.values_list("pk", anchor, positive).iterator()]
            except Exception as error:  # FieldError and friends: name the option
                raise CommandError(f"--fields {options['fields']!r}: {error}") from error
            documents = {key: str(text) for key, _, text in rows if text}
            try:
                return documents, training.examples_from_fields(rows)
            except training.TrainingInputError as error:
                raise CommandError(str(error)) from error
        if not (options["queries"] and options["qrels"]):
            raise CommandError("give --queries and --qrels (judged pairs) or --fields "
                               "ANCHOR:POSITIVE (no labels)")
        try:
            queries = {q.query_id: q.text for q in read_queries(options["queries"])}
            qrels = read_qrels(options["qrels"])
        except (OSError, EvaluationInputError) as error:
            raise CommandError(str(error)) from error
        id_field = options["id_field"]
        documents = {}
        for instance in queryset.iterator(chunk_size=500):
            key = str(getattr(instance, id_field) if id_field != "pk" else instance.pk)
            documents[key] = registration.document(instance).text
        try:
            return documents, training.examples_from_judgments(queries, qrels, documents)
        except training.TrainingInputError as error:
            raise CommandError(str(error)) from error

    def _held_out_ndcg(self, embedder, held_out, documents) -> float | None:
        if not held_out:
            return None
        return training.embedder_ndcg(
            lambda texts: embedder.encode_queries(texts),
            lambda texts: embedder.encode_passages(texts), held_out, documents,
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"

