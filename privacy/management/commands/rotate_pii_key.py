from django.core.management.base import BaseCommand, CommandError

from privacy.keys import PiiKeyRotationError, pii_key_rotate


class Command(BaseCommand):
    help = ("Re-key every stored keyed hash (id numbers, card tokens) with CDP_PII_KEY, the new key, the hashes "
            "being under the keys of CDP_PII_KEY_PREVIOUS (README, 'Rotating the key of the keyed hashes').")

    def handle(self, *args, **options):
        try:
            rotation = pii_key_rotate()
        except PiiKeyRotationError as exc:
            raise CommandError(str(exc)) from exc
        if rotation.already_current:
            self.stdout.write(f"the stored keyed hashes are under these {rotation.keys} keys already; nothing to do")
            return
        for label, count in rotation.rewritten.items():
            self.stdout.write(f"{label}: {count} re-keyed")
        self.stdout.write(f"rotated: the stored keyed hashes are under {rotation.keys} keys now; give every process "
                          f"these settings")
