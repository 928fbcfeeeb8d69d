// The seed's Turkish labels, in one place.
export const LABELS = Object.freeze({
    connected: 'Canlı',
    connecting: 'Bağlanıyor...',
    disconnected: 'Bağlantı Kesildi',
    unknown: 'Bilinmiyor',
    reconnect: 'Yeniden Bağlan',
    lastUpdate: 'Son güncelleme',
    retryingIn: (seconds) => `${seconds} sn içinde yeniden denenecek`,
    retryingNow: 'Yeniden deneniyor...',
    assignmentChanged: "Bu lead'in ataması değişti",
    accept: 'Güncelle',
    unassigned: 'Atanmamış',
    assignFailed: 'Atama yapılamadı',
});
