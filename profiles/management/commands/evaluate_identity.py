from django.core.management.base import BaseCommand, CommandError

from profiles.evaluation import IdentityTruthError, identity_evaluate


class Command(BaseCommand):
    help = ("Compare the profiles with a truth file (CSV source,customer_key,entity: records of one entity are one "
            "person) over the records it names: pair, exact-cluster and B-cubed precision, recall and F1, and the "
            "worst false merges and missed entities with the rules, links and scores between their records.")

    def add_arguments(self, parser):
        parser.add_argument("truth", help="CSV with the columns source,customer_key,entity")
        parser.add_argument("--show", type=int, default=10, help="false merges and missed entities to list (0: none)")

    def handle(self, *args, truth, show, **options):
        if show < 0:
            raise CommandError("--show takes 0 or more")
        try:
            evaluation = identity_evaluate(truth_path=truth, show=show)
        except IdentityTruthError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(evaluation.summary())
        for title, groups in (("false merges (profiles holding several entities)", evaluation.false_merges),
                              ("missed (entities spread over several profiles)", evaluation.missed)):
            if not groups:
                continue
            self.stdout.write(f"\nworst {title}:")
            for group in groups:
                self.stdout.write(f"  {group.label}: {group.wrong_pairs} wrong pair(s)")
                for name, entity, profile in group.records:
                    self.stdout.write(f"    {name:<28} entity {entity:<14} profile {profile}")
                for evidence in group.evidence:
                    self.stdout.write(f"    {evidence.record_a} ~ {evidence.record_b}: {evidence.kind}: {evidence.detail}")
                if not group.evidence:
                    self.stdout.write("    no rule key, link or score between them")
