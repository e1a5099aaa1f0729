import MTASTSCLI

MTASTS.runMain()
