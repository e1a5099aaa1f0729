import MTASTSCLI

await MTASTS.runMain()
