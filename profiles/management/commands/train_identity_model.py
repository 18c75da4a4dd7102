from django.core.management.base import BaseCommand, CommandError

from profiles.resolution import ModelTrainingError, identity_model_train, identity_resolve


class Command(BaseCommand):
    help = ("Estimate the probabilistic tier's model from the current records and store it; later resolutions "
            "score with it. --rescore also re-resolves every record with it.")

    def add_arguments(self, parser):
        parser.add_argument("--rescore", action="store_true",
                            help="re-score and re-resolve every record with the new model (a full resolution)")

    def handle(self, *args, rescore, **options):
        if rescore:
            self.stdout.write(identity_resolve(full=True, train=True).summary())
            return
        try:
            model = identity_model_train()
        except ModelTrainingError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{model} estimated from {model.trained_on_records} records in {model.training_seconds}s"
                          + (f"; {len(model.warnings)} warnings (admin: the model's page)" if model.warnings else ""))
